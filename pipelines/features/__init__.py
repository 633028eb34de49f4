"""I3D snippet features: backbone weights (`weights`) and the extraction presets' preprocessing (`presets`)."""

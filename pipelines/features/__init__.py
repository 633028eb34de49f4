"""I3D snippet features: backbone weights (`weights`), the presets' preprocessing (`presets`), the per-video
file layout (`store`), extraction (`extract`) and published features (`published`)."""

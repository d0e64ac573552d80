"""The front door: CLI, machine presets, scenarios and the pytest plugin."""

"""The decoder (transformer.py), its architecture presets (configs.py) and weight loading."""

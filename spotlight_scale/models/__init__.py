"""models layer: see spotlight_scale/__init__.py for the layering."""

"""The data side: datasets (BEIR folders, the built-in WordNet demo), frozen encoders, the on-disk embedding
store and the Lightning DataModules that stream it. This package never imports `smec`."""

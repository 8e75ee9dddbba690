"""Small Function apps the local-host tests run (never deployed)."""

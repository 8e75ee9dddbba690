"""Development and test only, never deployed: simulators, the local Functions host, the demo."""

"""The simulated lab: twins of real devices that run the same code path."""

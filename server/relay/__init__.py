"""Chain events to meters: the relay that follows every block, and demand response."""

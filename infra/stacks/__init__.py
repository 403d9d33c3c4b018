"""The two CloudFormation stacks of the flight-booking system: `BaseStack` and `AuroraStack`."""

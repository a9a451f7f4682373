"""Everything about *when*: fan-out planning, the due-sweeper, recovery, the beat schedule."""

"""Fixed schedules and learned schedule-policy heads for cogrpo."""

"""Reading and writing Docker Distribution storage trees."""

"""Market data: the publisher (the only code that calls ``group_send``)."""

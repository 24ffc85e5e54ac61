"""Position and time input: the NMEA parser, gpsd's JSON, sources by URL, the clock."""

"""The firmware's host side: the model blob format and its converter (`blob`), C sources for
firmware builds (`c_source`), the serial protocol client and kernel sets (`link`), latency-only uploads' generated
weights (`weights`), the firmware's
kernels built for this host (`host`), and building / flashing the firmware (`firmware`)."""

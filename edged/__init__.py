"""edged: a daemon that stages sleep in real time and publishes the stages over MQTT."""

__version__ = "0.1.0"

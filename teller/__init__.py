"""Teller: a real-time audio/video remote-teller and video contact-centre platform."""

__version__ = "0.1.0"

"""The media plane: peer connections, the forwarder, rooms and the stage host."""

from .node import Node, validate_room_name
from .participant import Participant, Permissions
from .room import Room

__all__ = ["Node", "Participant", "Permissions", "Room", "validate_room_name"]

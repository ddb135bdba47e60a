"""The WebSocket bridge: client handshake, backend dial and the frame relay."""

"""The WebRTC media adapter of the realtime session: live calls with the avatar (issue 11)."""

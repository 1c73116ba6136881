"""VocalBridge voice service: speech-to-text, a conversation turn, text-to-speech."""

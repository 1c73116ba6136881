"""The voice domain: audio, voices, text, end of utterance; pure values and rules."""

"""Speech: ASR captions and transcripts, TTS prompts, fraud-coaching and content-risk cues, PII masking."""

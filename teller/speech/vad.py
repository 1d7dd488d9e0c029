"""Voice activity and endpointing for one speaker, on 16 kHz mono samples.

An energy gate against the speaker's own noise floor decides speech per 20 ms
block; it is cheap enough to run on the event loop for every frame. It only
decides *when* to decode: the decoder's side checks the audio with Silero before
a final decode, so a beep or a tone that passes the gate costs one check, not a
hallucinated caption.

Finals are cut where the speaker pauses: at the end of an utterance, at a short
pause once the chunk is long enough, and at a hard limit. A final then covers a
few seconds at most, and its decode ends soon after the speaker stops.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

RATE = 16000
BLOCK = 320  # 20 ms
BLOCK_S = BLOCK / RATE
PREROLL_BLOCKS = 10
START_BLOCKS = 2  # consecutive speech blocks that open an utterance
MIN_SPEECH_BLOCKS = 5  # a chunk with less speech than this is not decoded
TAIL_S = 0.15  # silence kept after the last speech block
PARTIAL_MIN_S = 0.8


@dataclass(frozen=True)
class VadSettings:
    level_db: float = -45.0
    margin_db: float = 9.0
    endpoint_silence_s: float = 0.45
    pause_split_s: float = 0.2
    min_chunk_s: float = 2.5
    max_chunk_s: float = 8.0
    partial_interval_s: float = 1.0


@dataclass(frozen=True)
class Chunk:
    """Audio to decode: a final (a finished piece) or a partial (the piece so far)."""

    audio: np.ndarray  # int16
    start: float  # seconds of this speaker's audio, from its first sample
    end: float
    seq: int  # the piece; its partials and its final share it
    final: bool
    utterance_end: bool = False  # the speaker stopped (not a cut inside speech)


def level_db(block: np.ndarray) -> float:
    if not len(block):
        return -120.0
    rms = math.sqrt(float(np.dot(block.astype(np.float32), block.astype(np.float32))) / len(block))
    return 20 * math.log10(rms / 32768 + 1e-9)


class Endpointer:
    def __init__(self, settings: VadSettings) -> None:
        self.settings = settings
        self.noise_db = -60.0
        self.samples = 0  # fed so far
        self._pending = np.zeros(0, dtype=np.int16)
        self._preroll: deque[np.ndarray] = deque(maxlen=PREROLL_BLOCKS)
        self._run = 0  # consecutive speech blocks while idle
        self._speaking = False
        self._blocks: list[np.ndarray] = []
        self._chunk_start = 0.0
        self._speech_blocks = 0
        self._silence_s = 0.0
        self._last_speech_end = 0.0
        self._last_partial = 0.0
        self._seq = 0
        self.speech_s = 0.0

    @property
    def speaking(self) -> bool:
        return self._speaking

    @property
    def utterance_speech_s(self) -> float:
        """Speech heard in the piece being collected (a barge-in waits for a little)."""
        return self._speech_blocks * BLOCK_S if self._speaking else 0.0

    def feed(self, pcm: np.ndarray) -> list[Chunk]:
        if self._pending.size:
            pcm = np.concatenate((self._pending, pcm))
        whole = len(pcm) - len(pcm) % BLOCK
        self._pending = pcm[whole:].copy()
        out: list[Chunk] = []
        for i in range(0, whole, BLOCK):
            chunk = self._block(pcm[i : i + BLOCK])
            if chunk is not None:
                out.append(chunk)
        return out

    def flush(self) -> list[Chunk]:
        """The stream paused or ended: what was being said is final now."""
        if not self._speaking:
            return []
        chunk = self._cut(utterance_end=True)
        self._speaking = False
        return [chunk] if chunk is not None else []

    def _block(self, block: np.ndarray) -> Chunk | None:
        s = self.settings
        t_end = (self.samples + BLOCK) / RATE
        self.samples += BLOCK
        level = level_db(block)
        speech = level > s.level_db and level > self.noise_db + s.margin_db
        if not self._speaking:
            # The floor follows quiet quickly and loud slowly, so speech does not become it.
            rate = 0.1 if level < self.noise_db else 0.005
            self.noise_db += (level - self.noise_db) * rate
            self._preroll.append(block)
            self._run = self._run + 1 if speech else 0
            if self._run >= START_BLOCKS:
                self._speaking = True
                self._blocks = list(self._preroll)
                self._preroll.clear()
                self._chunk_start = t_end - len(self._blocks) * BLOCK_S
                self._speech_blocks = self._run
                self._silence_s = 0.0
                self._last_speech_end = t_end
                self._last_partial = t_end
                self._run = 0
            return None
        self._blocks.append(block)
        if speech:
            self._speech_blocks += 1
            self.speech_s += BLOCK_S
            self._silence_s = 0.0
            self._last_speech_end = t_end
        else:
            self._silence_s += BLOCK_S
        length = t_end - self._chunk_start
        if self._silence_s >= s.endpoint_silence_s:
            self._speaking = False
            return self._cut(utterance_end=True)
        if (length >= s.min_chunk_s and self._silence_s >= s.pause_split_s) or length >= s.max_chunk_s:
            return self._cut(utterance_end=False)
        if (
            self._speech_blocks >= MIN_SPEECH_BLOCKS
            and length >= PARTIAL_MIN_S
            and t_end - self._last_partial >= s.partial_interval_s
        ):
            self._last_partial = t_end
            return Chunk(np.concatenate(self._blocks), self._chunk_start, t_end, self._seq, final=False)
        return None

    def _cut(self, utterance_end: bool) -> Chunk | None:
        """The current piece as a final; the next piece starts empty."""
        blocks, start, speech_blocks = self._blocks, self._chunk_start, self._speech_blocks
        end = min(self._last_speech_end + TAIL_S, start + len(blocks) * BLOCK_S)
        self._blocks = []
        self._chunk_start = self.samples / RATE
        self._speech_blocks = 0
        self._last_partial = self._chunk_start
        if utterance_end:
            self._preroll.clear()
        if speech_blocks < MIN_SPEECH_BLOCKS or not blocks:
            return None
        audio = np.concatenate(blocks)[: max(BLOCK, round((end - start) * RATE))]
        chunk = Chunk(audio, start, end, self._seq, final=True, utterance_end=utterance_end)
        self._seq += 1
        return chunk

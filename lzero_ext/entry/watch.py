"""Watching an agent: episode returns of evaluation envs, and a GIF (or transcript) of one episode.

:class:`EpisodeRecorder` wraps env factories (``ding`` env managers call ``env.reset`` / ``env.step``
in process for the ``base`` manager); every finished episode's return is kept, and the filmed env's
first episode is recorded through the env's own ``ScaleZeroEnv.frame()``: Atari screens (ALE RGB),
DMC frames rendered by MuJoCo (needs ``MUJOCO_GL=egl`` or ``osmesa`` on a headless machine), MinAtar
boards in colour; Jericho, which has no picture, gets a transcript of the game text and the chosen
commands. :meth:`EpisodeRecorder.write` draws the running score on each frame (Pillow) and encodes
the GIF with imageio.

Example::

    recorder = EpisodeRecorder("Pong", record=True)
    env = recorder.wrap(lambda: AtariMultiTaskEnv(cfg), film=True)
    ...  # run episodes through env
    recorder.write("videos")  # 'videos/Pong.gif' (a text game: 'videos/detective.transcript.txt')
"""
import os
from typing import Any, Callable, List, Optional

import numpy as np

GIF_FPS = 20
MAX_FRAMES = 3000  # frames kept of one episode (a GIF of a 27k-step Atari episode would be huge)


class VideoUnavailable(RuntimeError):
    """This env cannot be filmed here (e.g. no OpenGL for MuJoCo rendering)."""


def _frame_of(env: Any) -> Optional[np.ndarray]:
    """The env's current picture as uint8 (H, W, 3), or None for envs without one (text games, other envs)."""
    from lzero_ext.envs.base import ScaleZeroEnv

    if not isinstance(env, ScaleZeroEnv):
        return None
    try:
        return env.frame()
    except RuntimeError as error:  # e.g. MuJoCo without OpenGL
        raise VideoUnavailable(str(error)) from None


def _score(value: float) -> str:
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.2f}"


def draw_score(frame: np.ndarray, text: str, *, scale: int = 2) -> np.ndarray:
    """``frame`` enlarged ``scale`` times with ``text`` drawn in its top-left corner on a dark strip."""
    from PIL import Image, ImageDraw

    image = Image.fromarray(np.ascontiguousarray(frame, dtype=np.uint8))
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    draw = ImageDraw.Draw(image)
    box = draw.textbbox((4, 4), text)
    draw.rectangle((0, 0, box[2] + 4, box[3] + 4), fill=(0, 0, 0))
    draw.text((4, 4), text, fill=(255, 255, 0))
    return np.asarray(image)


class EpisodeRecorder:
    """Episode returns of every wrapped env; frames (or a transcript) of the filmed env's first episode."""

    def __init__(self, task_name: str, *, record: bool) -> None:
        self.task_name, self.record = task_name, record
        self.returns: List[float] = []
        self.frames: List[np.ndarray] = []
        self.transcript: List[str] = []
        self.filming = record
        self.score = 0.0
        self.steps = 0
        self.error: Optional[VideoUnavailable] = None

    def wrap(self, make_env: Callable[[], Any], *, film: bool) -> Any:
        """Builds the env and wraps its ``reset`` / ``step`` (instance attributes, the class is untouched)."""
        env = make_env()
        reset, step = env.reset, env.step

        def recording_reset(*args: Any, **kwargs: Any) -> Any:
            obs = reset(*args, **kwargs)
            if film and self.filming:
                self.score, self.steps = 0.0, 0
                self._capture(env, None)
            return obs

        def recording_step(action: Any) -> Any:
            command = self._command(env, action) if film and self.filming else None
            timestep = step(action)
            if film and self.filming:
                self.score += float(np.asarray(timestep.reward).sum())
                self.steps += 1
                self._capture(env, command)
            if timestep.done:
                self.returns.append(float(timestep.info["eval_episode_return"]))
                if film:
                    self.filming = False
            return timestep

        env.reset, env.step = recording_reset, recording_step
        return env

    @staticmethod
    def _command(env: Any, action: Any) -> Optional[str]:
        """The command a text game's action index stands for (``valid_actions``: Jericho's), else None."""
        actions = getattr(env, "valid_actions", None)
        if actions is None:
            return None
        actions = actions() if callable(actions) else actions
        index = int(np.asarray(action).reshape(-1)[0])
        return actions[index] if 0 <= index < len(actions) else str(index)

    def _capture(self, env: Any, command: Optional[str]) -> None:
        if self.error is not None:
            return
        try:
            frame = _frame_of(env)
        except VideoUnavailable as error:
            self.error = error
            return
        if frame is None:  # a text game: the transcript
            if command is not None:
                self.transcript.append(f"> {command}")
            self.transcript.append(f"{getattr(env, 'text', '').strip()}\n[score {_score(self.score)}, step {self.steps}]\n")
        elif len(self.frames) < MAX_FRAMES:
            self.frames.append(draw_score(frame, f"{self.task_name}  score {_score(self.score)}  step {self.steps}",
                                          scale=2 if frame.shape[1] < 320 else 1))

    def write(self, out_dir: str) -> str:
        """Writes ``<out_dir>/<task>.gif`` (text games: ``<task>.transcript.txt``); returns the path."""
        if self.error is not None:
            raise self.error
        os.makedirs(out_dir, exist_ok=True)
        if self.transcript and not self.frames:
            path = os.path.join(out_dir, f"{self.task_name}.transcript.txt")
            with open(path, "w") as f:
                f.write("\n".join(self.transcript) + "\n")
            return path
        if not self.frames:
            raise VideoUnavailable("no frames were recorded")
        import imageio.v3 as iio

        path = os.path.join(out_dir, f"{self.task_name}.gif")
        iio.imwrite(path, np.stack(self.frames), extension=".gif", duration=1000 / GIF_FPS, loop=0)
        return path

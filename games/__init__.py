"""Vectorised JAX text games: `games.make(name, **options)` builds one by name."""

from games import kuhn_poker  # noqa: F401
from games import tic_tac_toe  # noqa: F401  (registers the game)
from games import simple_negotiation  # noqa: F401
from games import nim  # noqa: F401
from games import leduc_poker  # noqa: F401
from games import pig  # noqa: F401
from games import connect_four  # noqa: F401
from games import matrix_game  # noqa: F401  (matrix_game and the repeated games)
from games import team_zero_one  # noqa: F401
from games import arithmetic  # noqa: F401  (verifiable single-player tasks, games/task.py)
from games import countdown  # noqa: F401
from games import linear_equation  # noqa: F401
from games.api import EVAL_INVALID_REWARDS, INVALID_ACTION, TRAIN_INVALID_REWARDS, Game, State
from games.api import WithRules, default_options, make, register, registered_names

__all__ = ["EVAL_INVALID_REWARDS", "INVALID_ACTION", "TRAIN_INVALID_REWARDS", "Game", "State",
           "WithRules", "default_options", "make", "register", "registered_names"]

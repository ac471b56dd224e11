"""Tasks: what a search is for (prompt, token mask, reward, end of text).

- Constraints on free text: `Keywords`, `BannedWords`, `Regex`, `Length`, combined with `AllOf`
  or built by `constraints_task`.
- Puzzles with exact verifiers, whose masks propose only legal moves: `Game24Task`,
  `CountdownTask`, `BlocksworldTask`.
"""

from tempo_search.tasks.arithmetic import (
    BinaryOp,
    Expression,
    ExpressionError,
    Number,
    parse_expression,
    parse_numbers,
)
from tempo_search.tasks.base import AllOf, Constraint, MoveTask, Task, Verdict
from tempo_search.tasks.blocksworld import (
    Action,
    BlocksState,
    BlocksworldInstance,
    BlocksworldTask,
    PlanParseError,
    PlanVerdict,
    apply_action,
    generate_instances,
    goal_reached,
    legal_actions,
    load_instance,
    load_instances,
    optimal_plan,
    parse_plan,
    save_instances,
    verify_plan,
)
from tempo_search.tasks.constraints import (
    BannedWords,
    Keywords,
    Length,
    Regex,
    constraints_task,
    inflected_forms,
)
from tempo_search.tasks.countdown import CountdownTask, solve_countdown, verify_countdown
from tempo_search.tasks.game24 import (
    Game24Puzzle,
    Game24Task,
    all_game24_puzzles,
    solve_game24,
    verify_game24,
)

__all__ = [
    "Action",
    "AllOf",
    "BannedWords",
    "BinaryOp",
    "BlocksState",
    "BlocksworldInstance",
    "BlocksworldTask",
    "Constraint",
    "CountdownTask",
    "Expression",
    "ExpressionError",
    "Game24Puzzle",
    "Game24Task",
    "Keywords",
    "Length",
    "MoveTask",
    "Number",
    "PlanParseError",
    "PlanVerdict",
    "Regex",
    "Task",
    "Verdict",
    "all_game24_puzzles",
    "apply_action",
    "constraints_task",
    "generate_instances",
    "goal_reached",
    "inflected_forms",
    "legal_actions",
    "load_instance",
    "load_instances",
    "optimal_plan",
    "parse_expression",
    "parse_numbers",
    "parse_plan",
    "save_instances",
    "solve_countdown",
    "solve_game24",
    "verify_countdown",
    "verify_game24",
    "verify_plan",
]

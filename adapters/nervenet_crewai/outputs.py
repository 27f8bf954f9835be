"""``CrewOutput`` as JSON values and back, for results stored in Redis (never pickled).

Its ``pydantic`` fields are typed ``BaseModel``: they are dumped with ``serialize_as_any`` (else
they dump as ``{}``) and their class is stored by *name*. The reader revives them only with a
class it already holds under that name (the crew's ``output_pydantic`` models, a flow's declared
models): nothing named in a stored record is ever imported.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from crewai import CrewOutput
from pydantic import BaseModel

from nervenet.errors import ConfigurationError

from .runner import model_name


def _name(model: BaseModel | None) -> str | None:
    return None if model is None else model_name(type(model))


def dump_crew_output(output: CrewOutput) -> dict[str, Any]:
    """JSON values: ``output`` (the dump), ``pydantic`` and ``task_models`` (model names)."""
    return {
        "output": output.model_dump(mode="json", serialize_as_any=True),
        "pydantic": _name(output.pydantic),
        "task_models": [_name(t.pydantic) for t in output.tasks_output],
    }


def model_names(output: CrewOutput) -> set[str]:
    """Names of the model classes ``output`` holds (to check they can be revived)."""
    found = [_name(output.pydantic), *(_name(t.pydantic) for t in output.tasks_output)]
    return {name for name in found if name is not None}


def load_crew_output(
    stored: Mapping[str, Any], models: Mapping[str, type[BaseModel]]
) -> CrewOutput:
    """Revive what :func:`dump_crew_output` made, with ``models`` (name -> class) only."""
    data = dict(stored["output"])

    def model(name: Any, value: Any) -> BaseModel | None:
        if name is None or value is None:
            return None
        declared = models.get(str(name))
        if declared is None:
            raise ConfigurationError(
                f"a stored CrewOutput holds a {name!r} this process does not declare; deploy "
                "the same code to every process"
            )
        return declared.model_validate(value)

    data["pydantic"] = model(stored.get("pydantic"), data.get("pydantic"))
    tasks = [dict(task) for task in data.get("tasks_output") or []]
    names = list(stored.get("task_models") or [])
    if len(tasks) != len(names):
        raise ConfigurationError("a stored CrewOutput is inconsistent (task models)")
    for task, name in zip(tasks, names, strict=True):
        task["pydantic"] = model(name, task.get("pydantic"))
    data["tasks_output"] = tasks
    return CrewOutput.model_validate(data)

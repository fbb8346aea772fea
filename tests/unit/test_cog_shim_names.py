"""The Cog names and checks Ember's `cog` shim must provide beyond the basics.

Each case is a model an unchanged Cog project could contain: it imports from `cog.types` or
`cog.coder`, marks a third-party type `Opaque`, restricts a file input with `accept`, has a
default that breaks its own constraint, or takes a `str | float` union. The models are loaded
through Ember's Cog loader, so the checks run where a deploy would run them.
"""

from __future__ import annotations

import importlib
import sys
import textwrap
import typing
from pathlib import Path
from typing import Any

import pytest

from ember.packages import cog as cog_format
from ember.packages.predictor import Predictor, PredictorError, validated_inputs
from ember.packages.schema import openapi_schema


def load_model(root: Path, source: str, cog_yaml: str | None = None) -> Predictor:
    """Write a Cog package whose predict.py is `source` and load it as a deploy would."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "cog.yaml").write_text(cog_yaml or 'predict: "predict.py:Predictor"\n')
    (root / "predict.py").write_text(textwrap.dedent(source))
    return cog_format.load(cog_format.read_spec(root))


def input_properties(predictor: Predictor) -> dict[str, Any]:
    schema = openapi_schema(predictor)
    return schema["components"]["schemas"]["Input"]["properties"]


@pytest.fixture
def cog_module() -> Any:
    """The shim's `cog`, imported the way a replica imports it."""
    if cog_format.SHIMS not in sys.path:
        sys.path.insert(0, cog_format.SHIMS)
    return importlib.import_module("cog")


# ------------------------------------------------------------------------------ names


def test_cog_types_and_cog_coder_are_importable_with_cogs_names(cog_module: Any) -> None:
    types = importlib.import_module("cog.types")
    coder = importlib.import_module("cog.coder")
    for name in ("Path", "File", "Secret", "URLPath", "URLFile", "ConcatenateIterator"):
        assert getattr(types, name) is getattr(cog_module, name)
    for name in ("Opaque", "FieldInfo", "URLPath", "URLFile"):
        assert name in cog_module.__all__

    class Point:
        pass

    class PointCoder(coder.Coder):
        @staticmethod
        def factory(tpe: Any) -> PointCoder | None:
            return PointCoder() if tpe is Point else None

        def encode(self, value: Any) -> dict[str, Any]:
            return {}

        def decode(self, value: dict[str, Any]) -> Any:
            return Point()

    coder.Coder.register(PointCoder)
    assert isinstance(coder.Coder.lookup(Point), PointCoder)
    assert coder.Coder.lookup(int) is None


def test_url_path_keeps_the_url_and_names_itself_after_it(cog_module: Any, tmp_path: Path):
    remote = cog_module.URLPath("https://example.com/images/a%20cat.png?size=2")
    assert remote.source == "https://example.com/images/a%20cat.png?size=2"
    assert remote.name == remote.filename == "a cat.png"
    local = tmp_path / "x.txt"
    local.write_text("hi")
    assert cog_module.URLPath(str(local)).convert().read_text() == "hi"
    assert isinstance(cog_module.Input(default=1), cog_module.FieldInfo)


# ------------------------------------------------------------------------------ accept


def test_accept_on_a_file_input_is_written_as_x_cog_accept(tmp_path: Path) -> None:
    predictor = load_model(
        tmp_path / "accept",
        """
        from typing import Optional
        from cog import BasePredictor, Input, Path

        class Predictor(BasePredictor):
            def predict(
                self,
                image: Path = Input(accept="image/*"),
                clip: Optional[Path] = Input(accept="audio/wav,audio/mp3", default=None),
                name: str = Input(default="x"),
            ) -> str:
                return name
        """,
    )
    properties = input_properties(predictor)
    assert properties["image"]["x-cog-accept"] == "image/*"
    assert properties["image"]["format"] == "uri"
    assert properties["clip"]["x-cog-accept"] == "audio/wav,audio/mp3"
    assert "x-cog-accept" not in properties["name"]


def test_accept_on_a_string_input_fails_the_load_as_cogs_build_does(tmp_path: Path) -> None:
    with pytest.raises(PredictorError, match=r"accept is only valid on Path or File inputs"):
        load_model(
            tmp_path / "accept-str",
            """
            from cog import BasePredictor, Input

            class Predictor(BasePredictor):
                def predict(self, name: str = Input(accept="text/plain")) -> str:
                    return name
            """,
        )


# ------------------------------------------------------------------- defaults vs constraints


@pytest.mark.parametrize(
    ("declaration", "problem"),
    [
        ("num: int = Input(default=1, ge=2, le=10)", "must be at minimum 2"),
        ("num: float = Input(default=11.5, le=10)", "must be at maximum 10"),
        ("text: str = Input(default='ab', min_length=3)", "length of at minimum 3"),
        ("text: str = Input(default='abc', regex='^[0-9]+$')", "does not match"),
        ("text: str = Input(default='c', choices=['a', 'b'])", "not one of the choices"),
    ],
)
def test_a_default_that_breaks_its_constraint_fails_the_load(
    tmp_path: Path, declaration: str, problem: str
) -> None:
    with pytest.raises(PredictorError, match=f"invalid default for input .*{problem}"):
        load_model(
            tmp_path / "bad-default",
            f"""
            from cog import BasePredictor, Input

            class Predictor(BasePredictor):
                def predict(self, {declaration}) -> str:
                    return "never"
            """,
        )


def test_defaults_within_their_constraints_still_load(tmp_path: Path) -> None:
    predictor = load_model(
        tmp_path / "good-default",
        """
        from cog import BasePredictor, Input

        class Predictor(BasePredictor):
            def predict(
                self,
                num: int = Input(default=2, ge=2, le=10),
                maybe: int = Input(default=None, ge=5),
                text: str = Input(default="b", choices=["a", "b"]),
            ) -> int:
                return num
        """,
    )
    assert validated_inputs(predictor, {}) == {"num": 2, "maybe": None, "text": "b"}


# ------------------------------------------------------------------------------ Opaque


def test_opaque_types_are_objects_in_the_schema_and_pass_through(tmp_path: Path) -> None:
    predictor = load_model(
        tmp_path / "opaque",
        """
        from typing import Annotated, List
        from cog import BaseModel, BasePredictor, Opaque

        class ThirdParty:
            pass

        class Output(BaseModel):
            result: Annotated[ThirdParty, Opaque]
            results: Annotated[List[ThirdParty], Opaque]

        class Predictor(BasePredictor):
            def predict(
                self,
                payload: Annotated[ThirdParty, Opaque],
                items: Annotated[List[ThirdParty], Opaque],
            ) -> Output:
                return Output(result=payload, results=items)
        """,
    )
    schema = openapi_schema(predictor)["components"]["schemas"]
    assert schema["Input"]["properties"]["payload"] == {
        "title": "Payload",
        "type": "object",
        "x-order": 0,
    }
    assert schema["Input"]["properties"]["items"] == {
        "items": {"type": "object"},
        "title": "Items",
        "type": "array",
        "x-order": 1,
    }
    assert schema["Input"]["required"] == ["payload", "items"]
    assert schema["Output"]["properties"]["result"] == {"title": "Result", "type": "object"}
    raw = {"payload": {"name": "alice"}, "items": [{"name": "first"}]}
    values = validated_inputs(predictor, raw)
    assert values == raw
    output = predictor.predict(**values)
    assert output.model_dump() == {"result": {"name": "alice"}, "results": [{"name": "first"}]}


# ------------------------------------------------------------------------------ unions


def test_a_json_integer_stays_an_int_in_a_union_with_float(tmp_path: Path) -> None:
    predictor = load_model(
        tmp_path / "union",
        """
        from typing import Union
        from cog import BasePredictor, Input

        class Predictor(BasePredictor):
            def predict(
                self,
                value: str | float | None = Input(default=None),
                other: Union[float, str] = Input(default="x"),
                plain: float = Input(default=0.5),
            ) -> str:
                return ""
        """,
    )
    values = validated_inputs(predictor, {"value": 1, "other": 2, "plain": 3})
    assert (type(values["value"]), values["value"]) == (int, 1)
    assert (type(values["other"]), values["other"]) == (int, 2)
    assert type(values["plain"]) is float  # not a union: Cog gives a float input a float
    values = validated_inputs(predictor, {"value": 1.5, "other": "hi"})
    assert (values["value"], values["other"]) == (1.5, "hi")
    with pytest.raises(Exception, match="value"):
        validated_inputs(predictor, {"value": True})


# ----------------------------------------------------------------------- requests runtime


@pytest.mark.parametrize(
    ("requirements", "expected"),
    [
        ("numpy==2.0.0\n", ["numpy==2.0.0", "requests>=2,<3"]),
        ("requests==2.31.0\n", ["requests==2.31.0"]),
    ],
)
def test_cog_environments_carry_requests_as_cogs_runtime_does(
    tmp_path: Path, requirements: str, expected: list[str]
) -> None:
    (tmp_path / "requirements.txt").write_text(requirements)
    (tmp_path / "cog.yaml").write_text(
        'build:\n  python_requirements: requirements.txt\npredict: "predict.py:Predictor"\n'
    )
    assert cog_format.read_spec(tmp_path).requirements == expected


def test_a_cog_package_without_requirements_stays_in_embers_environment(tmp_path: Path):
    (tmp_path / "cog.yaml").write_text('predict: "predict.py:Predictor"\n')
    assert cog_format.read_spec(tmp_path).requirements == []


# ------------------------------------------------------------------------- dict inputs


def test_dict_inputs_are_plain_objects_in_the_schema(tmp_path: Path) -> None:
    predictor = load_model(
        tmp_path / "dicts",
        """
        from typing import Any, Dict, List, Optional
        from cog import BasePredictor, Input

        class Predictor(BasePredictor):
            def predict(
                self,
                data: dict,
                messages: List[Dict[str, Any]],
                extra: Optional[list[dict]] = Input(default=None),
            ) -> str:
                return ""
        """,
    )
    properties = input_properties(predictor)
    assert properties["data"] == {"title": "Data", "type": "object", "x-order": 0}
    assert properties["messages"] == {
        "items": {"type": "object"},
        "title": "Messages",
        "type": "array",
        "x-order": 1,
    }
    assert properties["extra"]["items"] == {"type": "object"}
    assert validated_inputs(predictor, {"data": {"a": 1}, "messages": [{"role": "user"}]}) == {
        "data": {"a": 1},
        "messages": [{"role": "user"}],
        "extra": None,
    }


def test_only_opaque_metadata_survives_on_an_input_annotation(tmp_path: Path) -> None:
    """Other `Annotated` metadata is dropped, so a file input is still seen as a plain Path."""
    predictor = load_model(
        tmp_path / "annotated",
        """
        from typing import Annotated
        from cog import BasePredictor, Input, Opaque, Path

        class ThirdParty:
            pass

        class Predictor(BasePredictor):
            def predict(
                self,
                image: Annotated[Path, "a photo"],
                thing: Annotated[ThirdParty, Opaque],
                steps: Annotated[int, Input(ge=1)] = 2,
            ) -> str:
                return ""
        """,
    )
    image, thing, steps = predictor.inputs
    assert image.annotation.__name__ == "Path"
    assert steps.annotation is int
    assert typing.get_origin(thing.annotation) is typing.Annotated

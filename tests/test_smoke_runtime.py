from conftest import model_path, run_once


def test_cog_hello_world_runs_unchanged(runtime):
    run = run_once(runtime, model_path("cog", "hello-world"), input={"text": "alice"})
    assert run.result.status == "succeeded", run.result.error
    assert run.result.output == "hello alice"
    assert run.result.metrics["predict_time"] > 0

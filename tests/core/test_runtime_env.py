"""runtime_env on a real local mesh: env_vars, a shipped working_dir, py_modules."""

from __future__ import annotations

import os
import sys
import textwrap

import pytest

import runtime

pytestmark = pytest.mark.timeout(60)


@runtime.remote
def read_env(key):
    return os.environ.get(key)


@runtime.remote
def cwd_file(name):
    with open(name) as f:
        return f.read(), os.getcwd()


def test_env_vars_per_task(cluster):
    task = read_env.options(runtime_env={"env_vars": {"RT_TEST_VAR": "on"}})
    assert runtime.get(task.remote("RT_TEST_VAR")) == "on"
    # Set only while the task ran.
    assert runtime.get(read_env.remote("RT_TEST_VAR")) is None


def test_working_dir_is_shipped_and_importable(cluster, tmp_path):
    wd = tmp_path / "project"
    wd.mkdir()
    (wd / "data.txt").write_text("payload")
    (wd / "helper_mod_rt.py").write_text("def triple(x):\n    return 3 * x\n")
    sys.path.insert(0, str(wd))
    try:
        import helper_mod_rt  # a module of the working dir, pickled by reference
    finally:
        sys.path.remove(str(wd))

    @runtime.remote(runtime_env={"working_dir": str(wd)})
    def use(x):
        import helper_mod_rt as h

        return h.triple(x), open("data.txt").read(), os.getcwd()

    value, text, cwd = runtime.get(use.remote(4))
    assert (value, text) == (12, "payload")
    assert cwd != str(wd) and cwd.endswith("project")  # a node's unpacked copy

    # A function defined in the shipped module itself (it only loads there).
    remote_triple = runtime.remote(helper_mod_rt.triple).options(
        runtime_env={"working_dir": str(wd)}
    )
    assert runtime.get(remote_triple.remote(5)) == 15


def test_py_modules_and_actor_env(cluster, tmp_path):
    pkg = tmp_path / "rt_extra_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        textwrap.dedent("""
        NAME = "extra"
    """)
    )

    @runtime.remote
    class Uses:
        def __init__(self):
            import rt_extra_pkg

            self.name = rt_extra_pkg.NAME

        def get(self):
            return self.name, os.environ.get("RT_ACTOR_VAR")

    actor = Uses.options(
        runtime_env={"py_modules": [str(pkg)], "env_vars": {"RT_ACTOR_VAR": "actor"}}
    ).remote()
    assert runtime.get(actor.get.remote()) == ("extra", "actor")


def test_bad_runtime_env_is_a_clear_error(cluster, tmp_path):
    with pytest.raises(ValueError, match="pip"):
        read_env.options(runtime_env={"pip": ["requests"]})
    with pytest.raises(ValueError, match="working_dir"):
        read_env.options(runtime_env={"working_dir": str(tmp_path / "missing")})
    with pytest.raises(ValueError, match="env_vars"):
        read_env.options(runtime_env={"env_vars": {"A": 1}})

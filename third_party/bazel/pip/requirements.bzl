"""requirement() as rules_python's pip hub spells it, for a local .venv.

Bazel does not install the Python packages here: the py_tests run under
.venv/bin/python (third_party/bazel/python), where `pip install -e '.[test]'`
put them. requirement("name") names this repository's empty target for the
package, so a BUILD file still says which packages a target uses.
"""

def requirement(name):
    return "@pip//:" + name.lower().replace("-", "_").replace(".", "_")

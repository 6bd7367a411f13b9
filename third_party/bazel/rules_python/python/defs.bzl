"""The native Python rules of Bazel 4 under the names rules_python exports.

Bazel 4 has py_binary, py_library, py_test and py_runtime built in; the
BUILD files load them from @rules_python so that they also read right for a
Bazel that needs the real rules_python.
"""

load("@bazel_tools//tools/python:toolchain.bzl", _py_runtime_pair = "py_runtime_pair")

def py_binary(**attrs):
    native.py_binary(**attrs)

def py_library(**attrs):
    native.py_library(**attrs)

def py_test(**attrs):
    native.py_test(**attrs)

def py_runtime(**attrs):
    native.py_runtime(**attrs)

py_runtime_pair = _py_runtime_pair

"""The stable public path of the sandbox (DESIGN.md); the code is pipeline.execution.sandbox."""

from pipeline.execution.sandbox import ExecResult, Sandbox

__all__ = ["ExecResult", "Sandbox"]

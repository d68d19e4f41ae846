"""Packaging for the orchestrator: `pip install -e .` puts its packages on the path."""
import re

from setuptools import find_packages, setup

# NOTE: read, not imported: the build may run without this folder on the path.
VERSION = re.search(r'^VERSION = "(.+)"$', open("conf/version.py").read(), re.M).group(1)

setup(
    name="orchestrator",
    version=VERSION,
    description="Job orchestrator for scientific web portals: queue, fair quotas, executors, results.",
    python_requires=">=3.11",
    packages=find_packages(include=["actors", "actors.*", "web", "web.*", "storage", "storage.*", "conf", "conf.*",
                                           "orchestrator_client"]),
    py_modules=["run_server", "run_client"],
    install_requires=[line.strip() for line in open("requirements.txt") if line.strip() and not line.startswith("#")],
    entry_points={"console_scripts": ["orchestrator = orchestrator_client.cli:main"]},
    extras_require={"test": ["pytest"]},
)

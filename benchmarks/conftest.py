"""Collects the benchmark files (``bench_*.py``) when pytest is given the folder, and records the
machine (``machine.py``) in the run's header and in the benchmark JSON."""
import pytest
import machine


def pytest_collect_file(file_path, parent):
    # files named on the command line are collected by pytest itself
    if file_path.suffix == ".py" and file_path.name.startswith("bench_") and not parent.session.isinitpath(file_path):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


def pytest_report_header(config):
    return machine.describe()


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info.update(machine.machine_info())

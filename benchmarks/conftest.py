"""Collects the benchmark files (``bench_*.py``) when pytest is given the folder, records the
machine (``machine.py``) in the run's header and in the benchmark JSON, and prints the summary
tables they add to the ``bench_summary`` fixture (a list of lines) at the end of the run."""
import pytest
import machine

SUMMARY_KEY = pytest.StashKey[list]()


def pytest_collect_file(file_path, parent):
    # files named on the command line are collected by pytest itself
    if file_path.suffix == ".py" and file_path.name.startswith("bench_") and not parent.session.isinitpath(file_path):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


def pytest_report_header(config):
    return machine.describe()


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info.update(machine.machine_info())


@pytest.fixture(scope="session")
def bench_summary(request):
    """Lines to print after the benchmarks' own tables."""
    return request.config.stash.setdefault(SUMMARY_KEY, [])


def pytest_terminal_summary(terminalreporter, config):
    for line in config.stash.get(SUMMARY_KEY, []):
        terminalreporter.write_line(line)

"""Two threads interleaved at a known point, for tests of thread independence."""
from __future__ import annotations

import threading
from typing import Callable

from torch import nn


def run_during(pause_at: nn.Module, first: Callable[[], None], second: Callable[[], None], timeout: float = 60) -> None:
    """Run ``first`` in one thread; when it enters ``pause_at`` (a forward pre-hook that fires for
    that thread only), it waits while ``second`` runs to the end in another thread, then resumes.
    Exceptions of either call are re-raised here."""
    inside, second_done, first_thread, errors = threading.Event(), threading.Event(), [], []

    def pause(module, args):
        if first_thread and threading.get_ident() == first_thread[0]:
            inside.set()
            second_done.wait(timeout=timeout)

    def guarded(fn, before: Callable[[], None], after: threading.Event):
        def run():
            before()
            try:
                fn()
            except BaseException as exc:  # re-raised below
                errors.append(exc)
            finally:
                after.set()

        return run

    run_first = guarded(first, lambda: first_thread.append(threading.get_ident()), inside)
    run_second = guarded(second, lambda: inside.wait(timeout=timeout), second_done)

    hook = pause_at.register_forward_pre_hook(pause)
    try:
        threads = [threading.Thread(target=run_first), threading.Thread(target=run_second)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=timeout)
    finally:
        hook.remove()
    if errors:
        raise errors[0]

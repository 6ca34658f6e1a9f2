"""The daemon lifts its soft open-files limit to the hard one at start (daemon.py), so
thousands of idle sessions do not hit the usual soft default of 1024 descriptors."""

from __future__ import annotations

import resource

from mailstead.process import raise_open_files_limit


def test_the_soft_open_files_limit_is_raised_to_the_hard_one() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        got = raise_open_files_limit()
        now = resource.getrlimit(resource.RLIMIT_NOFILE)
        expected = hard if hard != resource.RLIM_INFINITY else 1 << 20
        assert now == (expected, hard) and got == expected
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

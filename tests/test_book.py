"""dgm.book: where chapters run, and the benchmark results they show."""


def test_benchmark_results_reads_json_or_explains(capsys):
    from dgm import book

    assert book.benchmark_results("no-such-benchmark") is None
    assert "benchmarks/no-such-benchmark.py" in capsys.readouterr().out
    speed = book.benchmark_results("speed")
    assert speed is not None and "seconds" in speed

"""Reference solutions of the exercises (the library itself is the reference behind them)."""

"""Time to a target loss, shared by the benchmarks that race two training recipes to the same loss."""


def time_to_target(history: list[tuple[float, float]], target: float) -> float | None:
    """Training seconds at which the loss first reaches `target`, linear between evaluations, from a history of
    (training seconds, loss) pairs; None if it never does."""
    previous = None
    for seconds, loss in history:
        if loss <= target:
            if previous is None:
                return seconds
            share = (previous[1] - target) / (previous[1] - loss)
            return previous[0] + share * (seconds - previous[0])
        previous = (seconds, loss)
    return None

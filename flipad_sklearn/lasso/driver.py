"""The check / stop / drop step every iterative solver shares.

A solver's loop owns its state (iterates, momenta, dual variables) and how to
compact it; when a check is due it hands the iterate to :func:`checkpoint`,
which certifies the active rows, reports progress, says whether to stop and
which rows stay.  One rule for FISTA, exact ADMM and split ADMM (and any
registered solver: ``tests/test_extension_points.py``).
"""


def check_due(n_iter, max_iter, check_every, warm=True):
    """Whether iteration ``n_iter`` checks (every ``check_every``, and the last).

    ``warm=False`` (the solver started at the anchor, no warm start): not at
    iteration 0, where the iterate is the anchor, rarely the solution, and a
    check of a large layer costs several iterations (a fifth of SD conv_out's
    checks).  A warm start is checked at once: it may be certified already.
    """
    return (n_iter % check_every == 0 and (warm or n_iter > 0)) or n_iter >= max_iter


def checkpoint(cert, n_iter, max_iter, d, *, callback=None, **extra):
    """Certify the active rows' iterate ``d``; ``(stop, keep)``.

    ``extra``: what the solver offers the certificate (``duals``, ``Wd``; see
    :meth:`~.certificate.Certificate.check`).  ``stop``: every row is done or
    ``max_iter`` is reached (the loop ends).  ``keep``: the positions of the
    rows that go on when some finished (the solver compacts its state with
    them), else None.  ``callback(n_iter, n_active)`` reports after each check.
    """
    final = n_iter >= max_iter
    done = cert.check(n_iter, d, final=final, **extra)
    if callback is not None:
        callback(n_iter, int((~done).sum()))
    if final or bool(done.all()):
        return True, None
    return False, (cert.drop(done) if done.any() else None)

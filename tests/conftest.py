"""Shared test helpers."""

import contextlib
import threading

import pytest

import app
import train


def error_line(main, argv) -> str:
    """The one line a script's main(argv) ends with on bad input: "<script>.py: error: ..." as the
    exit status (1), never a traceback or a usage block."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    message = exit_info.value.code
    prog = f"{main.__module__}.py"
    assert isinstance(message, str) and message.startswith(f"{prog}: error: ") and "\n" not in message, message
    return message


@contextlib.contextmanager
def app_server(*argv: str):
    """The server as `python app.py *argv` builds it, on 127.0.0.1 and a free port, in a thread;
    shut down and closed on exit."""
    args = app.build_parser().parse_args([*argv, "--port", "0"])
    app.check_args(args)
    server = app.Server("127.0.0.1", 0, app=app.App.from_args(args), quiet=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="session")
def die_after_first_checkpoint():
    """patch(monkeypatch) makes train.py's run die right after it writes epoch 0's last.pt (as a
    killed run would); returns the real save_checkpoint, to put back before resuming."""
    def patch(monkeypatch):
        real_save = train.save_checkpoint

        def save_then_die(path, *a, **kw):
            real_save(path, *a, **kw)
            if path.name == "last.pt":
                raise KeyboardInterrupt  # killed right after epoch 0's checkpoint

        monkeypatch.setattr(train, "save_checkpoint", save_then_die)
        return real_save
    return patch

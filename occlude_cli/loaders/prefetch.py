"""Photos decoded ahead of the folder loop (:func:`decode_ahead`): on a GPU the next image is decoded and
resized on a thread while the current one is scored, so a folder run is bound by the GPU, not by JPEG decoding.
:func:`occlude_cli.loaders.images.load_image` takes a decoded image from here (:func:`take_decoded`): the same
image, or the same error, as decoding it in turn."""

from __future__ import annotations

import os


def take_decoded(path):
    """The Future of ``path``'s image decoded ahead (removed from the registry), or None."""
    return DECODED_AHEAD.pop(ahead_key(path), None)


# Images decoded ahead of the folder loop (decode_ahead): path -> the Future of its load_image()
DECODED_AHEAD: dict = {}


def ahead_key(path) -> str:
    return os.path.abspath(os.fspath(path))


def decode_ahead(items, path_of, decode, accept, *, lookahead: int = 1):
    """Yield ``items`` unchanged while the images of the next ``lookahead`` items are decoded on a thread
    (``decode(path)``, for the paths ``accept(path)`` takes: photos, see
    :func:`occlude_cli.loaders.images.decode_photo`), so that a folder run on a GPU is not bound by JPEG decoding; the
    loop's own :func:`load_image` then takes the decoded image (or its error: a file that fails, fails the
    same way). At most ``lookahead + 1`` decoded images are held; one not asked for is dropped."""
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    queue: deque = deque()
    source = iter(items)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="occlude-decode") as pool:

        def pull() -> bool:
            item = next(source, _END)
            if item is _END:
                return False
            path = path_of(item)
            key = None
            if path is not None and accept(path):
                key = ahead_key(path)
                DECODED_AHEAD[key] = pool.submit(decode, path)
            queue.append((item, key))
            return True

        try:
            for _ in range(lookahead + 1):
                if not pull():
                    break
            while queue:
                item, key = queue.popleft()
                pull()  # the next one decodes while this one is computed
                yield item
                if key is not None:
                    DECODED_AHEAD.pop(key, None)  # not asked for (skipped, failed earlier): dropped
        finally:
            for _, key in queue:
                if key is not None:
                    DECODED_AHEAD.pop(key, None)


_END = object()

"""`python -m kloader inspect DIR`, and what importing the image names pulls in."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import kloader
from kloader import __main__ as cli
from kloader._images import survey

import image_files as images


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Runs this Python in `cwd` (not the repository), so it imports the installed kloader."""
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, cwd=cwd, timeout=60, check=False
    )


def test_inspect_reports_classes_sizes_and_unreadable_files(tmp_path: Path) -> None:
    """Counts per class in label order, sizes, formats, ignored and unreadable files; exit code 1."""
    images.make_folder(tmp_path, {"dog": 2, "cat": 3}, ext="jpg", size=(30, 20))
    images.write_pattern(tmp_path / "dog" / "big.png", size=(64, 48))
    images.write_pattern(tmp_path / "dog" / "tall.png", size=(20, 60))  # the tallest, not the largest
    images.write_truncated_jpeg(tmp_path / "cat" / "broken.jpg")
    images.write_text(tmp_path / "cat" / "notes.txt")
    images.write_solid(tmp_path / "stray.jpg", (0, 0, 0))
    result = run("-m", "kloader", "inspect", str(tmp_path), "--no-progress", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    out = result.stdout
    assert "Classes: 2" in out
    assert "0  cat        4 images" in out and "1  dog        4 images" in out
    assert "Total: 8 images" in out
    assert "1 images lie directly in the folder" in out
    assert "Ignored: 1 files without an image extension (.txt 1)" in out
    assert "smallest 30x20, largest 64x48 (in pixels)" in out
    assert "widths 20-64 (median 30), heights 20-60 (median 20)" in out
    assert "Formats: JPEG 6, PNG 2" in out
    assert "Unreadable: 1" in out and "broken.jpg: OSError: image file is truncated" in out


def test_inspect_of_a_clean_flat_folder_exits_0(tmp_path: Path) -> None:
    """No class subfolders: a plain count; no unreadable files: exit code 0."""
    for i in range(3):
        images.write_pattern(tmp_path / f"{i}.webp", size=(10, 10 + i))
    code = cli.main(["inspect", str(tmp_path), "--no-progress"])
    assert code == 0


def test_max_pixels_is_the_inspect_limit_in_place_of_pillows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--max-pixels decides, above Pillow's own limit and below it, with and without decoding."""
    pillows_limit = Image.MAX_IMAGE_PIXELS
    images.write_bomb_png(tmp_path / "huge.png", width=20_000, height=10_000)  # 200 M pixels
    images.write_pattern(tmp_path / "small.png", size=(40, 30))
    # Pillow alone refuses 200 M pixels as it opens the header (twice its 89.5 M).
    assert cli.main(["inspect", str(tmp_path), "--no-progress", "--no-check"]) == 1
    assert "over max_pixels=89478485" in capsys.readouterr().out
    assert (
        cli.main(["inspect", str(tmp_path), "--no-progress", "--no-check", "--max-pixels", "300000000"]) == 0
    )
    assert "Unreadable: 0" in capsys.readouterr().out
    # A limit under the image's size holds without a decode too, and names the flag's value.
    assert cli.main(["inspect", str(tmp_path), "--no-progress", "--no-check", "--max-pixels", "5000"]) == 1
    out = capsys.readouterr().out
    assert "huge.png: 20000x10000 = 200000000 pixels is over max_pixels=5000" in out
    assert "small.png" not in out
    assert pillows_limit == Image.MAX_IMAGE_PIXELS  # main() put Pillow's own limit back
    with pytest.raises(SystemExit):
        cli.main(["inspect", str(tmp_path), "--max-pixels", "0"])
    assert "must be at least 1" in capsys.readouterr().err


def test_inspect_says_when_image_folder_refuses_classes_that_share_a_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A link from one class into another: inspect --follow-links names the refusal, exit 1."""
    images.make_folder(tmp_path, {"a": 2, "b": 1}, ext="png", size=(8, 8))
    (tmp_path / "b" / "more").symlink_to(tmp_path / "a", target_is_directory=True)
    assert cli.main(["inspect", str(tmp_path), "--no-progress", "--follow-links"]) == 1
    out = capsys.readouterr().out
    assert "ImageFolder refuses this folder: The class folders 'a' and 'b'" in out
    assert "or use follow_links=False" in out
    with pytest.raises(ValueError, match="reach the same folder through a link"):
        kloader.ImageFolder(tmp_path, image_size=(8, 8), follow_links=True)
    assert cli.main(["inspect", str(tmp_path), "--no-progress"]) == 0  # the link is not entered
    assert "refuses" not in capsys.readouterr().out


def test_inspect_fails_on_a_class_folder_without_images(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A class folder holding no image: ImageFolder refuses the folder, so inspect exits 1 and
    quotes the refusal (it exited 0, beside its own note that ImageFolder refuses it)."""
    images.make_folder(tmp_path, {"a": 2}, ext="png", size=(8, 8))
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "notes.txt").write_text("not an image")
    assert cli.main(["inspect", str(tmp_path), "--no-progress"]) == 1
    assert "ImageFolder refuses this folder: Class folder" in capsys.readouterr().out
    with pytest.raises(ValueError, match="has no images"):
        kloader.ImageFolder(tmp_path, image_size=(8, 8))


def test_a_class_folder_linking_to_another_is_refused_with_a_fix_that_applies(tmp_path: Path) -> None:
    """kittens -> cats with follow_links=False (the default): a class folder that is a link is
    always read, so the message says to remove the link, not to use follow_links=False."""
    images.make_folder(tmp_path, {"cats": 2}, ext="png", size=(8, 8))
    (tmp_path / "kittens").symlink_to(tmp_path / "cats", target_is_directory=True)
    with pytest.raises(ValueError, match="reach the same folder") as error:
        kloader.ImageFolder(tmp_path, image_size=(8, 8))
    assert "follow_links" not in str(error.value) and "remove the link" in str(error.value)


def test_inspect_quotes_names_holding_a_newline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """One line per unreadable file, even when its name holds a newline; other names as they are."""
    images.write_truncated_jpeg(tmp_path / "two\nlines.jpg")
    images.write_truncated_jpeg(tmp_path / "été.jpg")
    assert cli.main(["inspect", str(tmp_path), "--no-progress"]) == 1
    lines = capsys.readouterr().out.splitlines()
    unreadable = lines[lines.index("Unreadable: 2 (on_error='skip' leaves these out)") + 1 :]
    assert len(unreadable) == 2
    assert any("two\\nlines.jpg': OSError" in line and line.strip().startswith("'") for line in unreadable)
    assert any(f"{tmp_path / 'été.jpg'}: OSError" in line for line in unreadable)


def test_inspect_notes_float_images_and_how_they_are_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Mode F files are counted in a note: ImageFolder clips them to 0..255."""
    scaled = np.full((6, 8), 0.75, dtype=np.float32)  # a float TIFF holding 0..1
    images.write(tmp_path / "scaled.tiff", Image.fromarray(scaled))
    images.write_pattern(tmp_path / "plain.png", size=(8, 6))
    assert cli.main(["inspect", str(tmp_path), "--no-progress"]) == 0
    assert "Note: 1 images are 32-bit float (mode F)" in capsys.readouterr().out
    folder = kloader.ImageFolder(tmp_path, image_size=(6, 8), label_mode=None)
    assert folder.file_paths[1].endswith("scaled.tiff")
    assert np.all(folder[1] == 1.0)  # 0.75 read on the 0..255 scale, as the note says


def test_inspect_of_a_missing_folder_says_so(tmp_path: Path) -> None:
    """A missing folder: exit code 2 and the path on stderr."""
    result = run("-m", "kloader", "inspect", "/no/such/folder", cwd=tmp_path)
    assert result.returncode == 2 and "/no/such/folder" in result.stderr


def test_progress_bar(tmp_path: Path) -> None:
    """The progress bar counts files up to the total and ends its line."""
    stream = io.StringIO()
    bar = cli.ProgressBar(stream)
    for done in range(1, 501):
        bar(done, 500)
    text = stream.getvalue()
    assert text.startswith("\rreading [") and text.endswith("] 500/500 files\n")
    assert "#" * 30 in text and text.count("\r") < 50, "redrawn at most 10 times a second"
    images.make_folder(tmp_path, {"a": 3})
    seen: list[tuple[int, int]] = []
    survey.survey(str(tmp_path), progress=lambda done, total: seen.append((done, total)))
    assert seen == [(1, 3), (2, 3), (3, 3)]


def test_progress_bar_shows_on_request(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--progress draws the bar on stderr even for a small folder that is not on a terminal."""
    images.make_folder(tmp_path, {"a": 2})
    assert cli.main(["inspect", str(tmp_path), "--progress"]) == 0
    assert "2/2 files" in capsys.readouterr().err


def test_image_names_import_neither_keras_nor_torch(tmp_path: Path) -> None:
    """ImageFolder and its decoding load without Keras (workers never import it); `import kloader`
    does not even load Pillow."""
    code = (
        "import sys, kloader\n"
        "assert 'PIL' not in sys.modules\n"
        "kloader.ImageFolder, kloader.save_preview\n"
        "import kloader.__main__\n"
        "bad = [m for m in ('keras', 'tensorflow', 'jax', 'torch') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    result = run("-c", code, cwd=tmp_path)
    assert result.returncode == 0, result.stderr


def test_public_names_are_sorted_and_importable() -> None:
    """kloader.__all__ is sorted and every name in it resolves."""
    assert kloader.__all__ == sorted(kloader.__all__)
    assert all(getattr(kloader, name) is not None for name in kloader.__all__)

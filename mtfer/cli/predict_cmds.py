"""`mtfer predict` and `mtfer export`: photos, folders and videos to labels (JSON, text or CSV), and the network\nexported for other runtimes."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mtfer.core import quiet


def cmd_predict(args: argparse.Namespace) -> int:
    from mtfer.core.decoding import ImageError, check_photo, decode_image, read_photo_file

    if args.csv is not None:
        return _predict_csv(args)
    # Every file checked first, without decoding (a bad one is reported before TensorFlow is even imported); then
    # decoded one at a time as the network answers: memory holds one photo's pixels, however many are given.
    checked, failed = [], 0
    for image in args.images:
        try:
            data = read_photo_file(image)
            check_photo(data)
            checked.append((image, data))
        except ImageError as exc:
            failed += 1
            print(f"mtfer: error: {image}: {_csv_hint(image) or exc}", file=sys.stderr)
    if not checked:
        return 1

    from mtfer.core.inference import Predictor
    from mtfer.media.answers import answer_labels, face_json, thresholds

    predictor = Predictor(
        args.model, small_faces=args.small_faces
    )  # served by LiteRT where the bundle can be: no TensorFlow to import
    limits = thresholds(predictor)  # the "not sure" thresholds: the same answers as the page and the CSVs
    outputs = []
    for image, data in checked:
        try:
            (preds,) = predictor.predict_images([decode_image(data)], largest_only=args.largest)
        except ImageError as exc:  # its header was fine, its pixels are not
            failed += 1
            print(f"mtfer: error: {image}: {exc}", file=sys.stderr)
            continue
        why = _explain(predictor, preds, args) if args.explain else [None] * len(preds)
        shown = [answer_labels(p.probabilities, limits) for p in preds]
        faces_out = [
            {**face_json(p, limits), **({"explain": e.to_dict()} if e else {})} for p, e in zip(preds, why, strict=True)
        ]
        outputs.append({"image": image, "faces": faces_out})
        if not args.json:
            print(f"{image}: {len(preds)} face(s)")
            for k, (p, a, e) in enumerate(zip(preds, shown, why, strict=True), start=1):
                tops = ", ".join(_answer_text(t, a[t], *p.top(t)) for t in p.probabilities)
                print(f"  face {k} at {p.box}: {tops}")
                if e is not None:
                    print(f"    why: {e.summary()}")
    if args.json:
        print(json.dumps(outputs[0] if len(args.images) == 1 else outputs, indent=2))
    return 1 if failed else 0


def _csv_hint(path: str) -> str | None:
    """Why a folder or a video given without --csv is not read, and what to type instead."""
    from mtfer.media.video import is_video

    if Path(path).is_dir():
        return "a folder: add --csv OUT.csv to write one row per face of every photo in it"
    if Path(path).is_file() and is_video(path):
        return "a video: add --csv OUT.csv to write its faces frame by frame (a timeline per face)"
    return None


def _predict_csv(args: argparse.Namespace) -> int:
    """`predict --csv`: a video's faces frame by frame, or every photo of folders (walked recursively) and files,
    one row per face, to a CSV file ('-': standard output). A progress bar on stderr; a summary at the end."""
    from mtfer.core import decoding
    from mtfer.media import video

    if args.json or args.explain:
        raise ValueError("--csv writes a table: leave out --json and --explain")
    if not args.fps > 0:
        raise ValueError(f"--fps: the sampling rate must be a positive number of frames per second, got {args.fps:g}")
    if args.csv != "-":
        from mtfer.media.folders import refuse_overwriting_inputs

        refuse_overwriting_inputs(args.csv, [i for i in args.images if "://" not in i])
    if args.engine == "ray":
        return _predict_ray(args)
    videos, photos = [], []
    for item in args.images:
        path = Path(item)
        if path.is_dir():
            photos.append(item)
        elif not path.exists():
            raise FileNotFoundError(f"{item}: no such file or folder")
        elif not path.is_file():
            raise ValueError(f"{item} is not a regular file (a pipe, device or socket): not read")
        else:
            with path.open("rb") as f:
                head = f.read(64)
            # A file named as a video is one, readable or not: a broken .mp4 gets the video's one-line reason, never
            # a photo's "no face found" and exit 0.
            named_video = video.is_video_name(path)
            is_photo = decoding.image_kind(head) is not None or (not named_video and not video.is_video(path))
            (photos if is_photo else videos).append(item)
    if videos and photos:
        raise ValueError(
            f"{videos[0]} is a video and {photos[0]} is not: their tables differ (time and tracks); "
            "run `mtfer predict` once for the videos and once for the photos"
        )
    limits = _video_limits(args)
    if videos:  # every video checked before the model is loaded
        for item in videos:
            video.probe(item)

    from mtfer.core.inference import Predictor

    predictor = Predictor(args.model, small_faces=args.small_faces)
    to_stdout = args.csv == "-"
    report = sys.stderr if to_stdout else sys.stdout
    out = sys.stdout if to_stdout else args.csv
    from mtfer.media.folders import photos_to_csv, text_output
    from mtfer.media.tables import csv_text

    if photos:
        from mtfer.cli.progress import TextProgress

        result = photos_to_csv(predictor, photos, out, largest_only=args.largest, progress=TextProgress("photos"))
        print(result.summary() + ("" if to_stdout else f"; table in {args.csv}"), file=report)
        return 0
    with text_output(out) as handle:
        for k, item in enumerate(videos):
            analysis = video.VideoAnalysis(item, predictor, fps=args.fps, limits=limits, largest_only=args.largest)
            _run_video(analysis)
            handle.write(csv_text(analysis.table(), header=k == 0))
            handle.flush()
            for note in analysis.notes:
                print(f"mtfer: note: {analysis.source}: {note}", file=sys.stderr)
            print(_video_summary(analysis) + ("" if to_stdout else f"; table in {args.csv}"), file=report)
            if analysis.stopped:
                return 130
    return 0


def _predict_ray(args: argparse.Namespace) -> int:
    """`predict --csv OUT --engine ray`: photos or videos (folders, files or URIs) labelled by Ray Data actors, rows
    appended to OUT as batches (or whole videos) finish; a rerun skips those already there."""
    if args.csv == "-":
        raise ValueError("--engine ray appends to a file and resumes from it: give --csv OUT.csv (or OUT.parquet)")
    for item in args.images:
        if "://" not in item and not Path(item).exists():
            raise FileNotFoundError(f"{item}: no such file or folder")
    try:
        from mtfer.scale import ray_batch
    except ImportError as exc:
        raise ValueError(
            f"--engine ray needs the 'scale' extra: pip install -e '.[scale]' ({exc.name} is missing)"
        ) from None
    from mtfer.cli.progress import TextProgress

    photos, videos = ray_batch.list_files(args.images)
    if videos and photos:
        raise ValueError(
            f"{videos[0]} is a video and {photos[0]} is not: their tables differ (time and tracks); "
            "run `mtfer predict` once for the videos and once for the photos"
        )
    before = len(ray_batch.done_sources(args.csv))
    common = {
        "model": args.model,
        "largest_only": args.largest,
        "small_faces": args.small_faces,
        "address": args.address,
        "actors": args.actors,
    }
    result: ray_batch.FolderResult | ray_batch.VideoBatchResult
    if videos:
        result = ray_batch.videos_to_table(
            args.images, args.csv, fps=args.fps, limits=_video_limits(args), progress=TextProgress("videos"), **common
        )
        what = "videos"
    else:
        result = ray_batch.photos_to_table(args.images, args.csv, progress=TextProgress("photos"), **common)
        what = "photos"
    kept = f"; {before:,} {what} already in {args.csv} were skipped" if before else ""
    print(f"{result.summary()}{kept}; table in {args.csv}")
    return 0


def _video_limits(args: argparse.Namespace):
    """--max-seconds and --max-frames, each defaulting to the environment's (or the built-in) limit."""
    from mtfer.media import video, video_limits

    limits = video_limits.video_limits()
    return video.VideoLimits(
        max_seconds=args.max_seconds if args.max_seconds is not None else limits.max_seconds,
        max_frames=args.max_frames if args.max_frames is not None else limits.max_frames,
    )


def _run_video(analysis) -> None:
    """Run a video analysis with a progress bar on stderr; Ctrl-C stops it and keeps the frames analysed."""
    from mtfer.cli.progress import TextProgress

    progress = TextProgress(f"{analysis.source}: frames")
    try:
        progress(0, analysis.expected_frames)
        for _ in analysis.run():
            progress(len(analysis.frames), analysis.expected_frames)
    except KeyboardInterrupt:
        analysis.stop()
    progress(len(analysis.frames), len(analysis.frames))


def _video_summary(analysis) -> str:
    """'talk.mp4: 150 frames analysed (0:00.0 to 0:29.8, 5 per second) in 12.3 s: 2 faces followed, 4 frames
    without a face'."""
    from mtfer.media.video import format_time

    frames = analysis.frames
    tracks = {f.track for frame in frames for f in frame.faces}
    empty = sum(1 for frame in frames if not frame.faces)
    span = f"{format_time(frames[0].time_s)} to {format_time(frames[-1].time_s)}, " if frames else ""
    return (
        f"{analysis.source}: {len(frames):,} frame{'s' if len(frames) != 1 else ''} analysed ({span}"
        f"{analysis.fps:g} per second): {len(tracks):,} face{'s' if len(tracks) != 1 else ''} followed, "
        f"{empty:,} frame{'s' if empty != 1 else ''} without a face"
    )


def _explain(predictor, preds: list, args: argparse.Namespace) -> list:
    """`predict --explain`: a heatmap per face (mtfer.explain) of its top class of --explain-task."""
    from mtfer.assess.explain import explain_predictions

    return explain_predictions(predictor, preds, args.explain_task, args.explain_method)


def cmd_export(args: argparse.Namespace) -> int:
    from mtfer.core import backends, convert, export

    fmt = args.format or backends.format_from_path(args.out)
    if fmt == "onnx" and (reason := convert.onnx_unavailable_reason()):  # before TensorFlow is imported
        raise convert.ExportError(reason)
    quiet.import_tensorflow()
    result = export.export_bundle(args.model, fmt, args.out, runs_dir=args.runs)
    source = result.metadata["export"]["source_model"]
    print(f"{result.path}: {result.format}, float32, {result.size_bytes / 1e6:.2f} MB (from {source})")
    print(f"metadata: {result.metadata_path}")
    return 0


def _answer_text(task: str, answer: str, top: str, confidence: float) -> str:
    """'emotion happy (87%)' when sure; 'race other / not sure (african_american 49%)' when not, as the page says."""
    return f"{task} {answer} ({confidence:.0%})" if answer == top else f"{task} {answer} ({top} {confidence:.0%})"


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from mtfer.serve.api import serve
    except ImportError as exc:  # FastAPI and uvicorn are an optional extra
        raise ValueError(
            f"mtfer serve needs the 'serve' extra: pip install -e '.[serve]' ({exc.name} is missing)"
        ) from None
    serve(host=args.host, port=args.port, model=args.model, max_queue=args.max_queue, batch_faces=args.batch_faces)
    return 0

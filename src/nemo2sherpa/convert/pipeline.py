"""convert(): source -> checked checkpoint -> each model family's ONNX graphs + the text files its runtime reads beside
them (tokens.txt; onnx-asr's vocab.txt and config.json) + manifest.json, moved into place whole. The layout (which
runtime the directory is for) only chooses the families: everything else is theirs to say."""

from __future__ import annotations

import dataclasses
import datetime as dt
import gc
import platform
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from nemo2sherpa import __version__
from nemo2sherpa.checkpoint.architecture_config import nemo_model_config
from nemo2sherpa.checkpoint.archive import CONFIG_NAME, NemoArchive
from nemo2sherpa.checkpoint.config import facts_from_config
from nemo2sherpa.checkpoint.config_reading import parse_config
from nemo2sherpa.checkpoint.sources import ResolvedSource, resolve_source
from nemo2sherpa.convert.export.encoder_prep import AttentionRequest, prepare_encoder
from nemo2sherpa.convert.passes.optimize import REPLACED_WEIGHTS, optimize_encoder
from nemo2sherpa.errors import UserError
from nemo2sherpa.facts import ModelFacts
from nemo2sherpa.families import DEFAULT_LAYOUT, Family, families_for
from nemo2sherpa.graphs.weights_ahead import WeightsAhead
from nemo2sherpa.graphs.writing import DEFAULT_EXTERNAL_THRESHOLD, write_graph
from nemo2sherpa.hashing import sha256_file
from nemo2sherpa.manifest import FamilyRecord, Manifest, Variant, record_files
from nemo2sherpa.memory import release_free_memory
from nemo2sherpa.precision.variants import write_variants
from nemo2sherpa.progress import Progress
from nemo2sherpa.recipes import Recipe
from nemo2sherpa.staging import staged_directory


@dataclass(frozen=True)
class ConvertOptions:
    source: str
    output: Path
    revision: str | None = None
    random_weights: bool = False
    overwrite: bool = False
    external_threshold: int = DEFAULT_EXTERNAL_THRESHOLD
    seed: int = 0
    precisions: tuple[str, ...] = ("fp32",)
    attention: AttentionRequest = AttentionRequest()
    optimize: bool = True
    decoder: str | None = None  # a branch's name (Family.branch), "both" (a hybrid's two), or None: the model's first
    license: str | None = None  # the source's licence (a Hub licence id, or other:NAME:URL), recorded for publish
    layout: str = DEFAULT_LAYOUT  # which runtime's directory: sherpa-onnx, or onnx-asr (families.LAYOUTS)


@dataclass(frozen=True)
class ConvertResult:
    output: Path
    manifest: Manifest


@dataclass
class _Loaded:
    model: Any
    facts: ModelFacts
    pieces: list[str]
    checkpoint: dict[str, Any]
    hash_path: Path | None = None  # the checkpoint whose sha256 the manifest records
    hashing: Any = None  # the future of that sha256, computed beside the first family's export


def convert(options: ConvertOptions, progress: Progress | None = None) -> ConvertResult:
    progress = progress or Progress()
    started = time.perf_counter()
    with progress.stage("resolve source"):
        resolved = _resolve(options)
    licence = options.license or (resolved.recipe.license if resolved.recipe is not None else None)
    if licence:  # recorded for publish: the source's licence, as the user or the catalog states it
        from nemo2sherpa.licence import parse_licence

        record = parse_licence(licence).to_record()
        resolved = dataclasses.replace(resolved, provenance={**resolved.provenance, "license": record})
    with staged_directory(options.output, overwrite=options.overwrite) as partial:
        scratch = partial / ".scratch"
        scratch.mkdir()

        def refuse_early(facts: ModelFacts) -> None:  # what cannot be exported is refused before loading weights
            families_for(facts, options.decoder, resolved.path, options.layout)

        loaded = _random(resolved, scratch, options.seed, progress) if options.random_weights else \
            _checkpoint(resolved, scratch, progress, refuse_early)
        prep = prepare_encoder(loaded.model, loaded.facts, options.attention, resolved.path)
        facts = prep.facts
        families = families_for(facts, options.decoder, resolved.path, options.layout)
        comment = _comment(options.random_weights)
        exports = [_export_family(family, loaded, prep, facts, resolved.url, comment, options, partial, scratch,
                                  progress) for family in families]
        _write_companions(families, facts, loaded.pieces, partial)
        _clean_up_and_hash(loaded, scratch)
        loaded.model = None  # the captured weights were the model's own tensors: free them all now
        gc.collect()
        release_free_memory()

        from nemo2sherpa.convert.export.selfcheck import check_probes

        records: dict[str, FamilyRecord] = {}
        for exported in exports:
            with progress.stage(f"check {exported.family.title} ONNX against PyTorch"):
                exported.info["self_check_max_abs_diff"] = check_probes(exported.graph_files, exported.probes)
            fp32 = Variant(exported.family.files("fp32"))
            variant_record: dict[str, Any] = {}
            variants = {"fp32": fp32, **write_variants(partial, exported.family, fp32, facts, options.precisions,
                                                       progress, record=variant_record)}
            if variant_record:
                exported.info["precision_variants"] = variant_record
            records[exported.family.name] = FamilyRecord(variants=variants, metadata=exported.metadata,
                                                         model_type=exported.family.sherpa_model_type)

        with progress.stage("hash files and write manifest"):
            names = sorted(p.name for p in partial.iterdir() if p.is_file())
            manifest = Manifest(
                tool_version=__version__,
                created=dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
                source=loaded.checkpoint,
                model=facts,
                versions=_versions(),
                export={
                    "opset": 17,
                    "exporter": "torch.onnx TorchScript (NeMo Exportable)",
                    "external_data": {role: name for exported in exports
                                      for role, name in exported.external_data(partial).items()},
                    **exports[0].info,
                    **prep.info,
                    **({"more_families": {e.family.name: e.info for e in exports[1:]}} if len(exports) > 1 else {}),
                },
                families=records,
                files=record_files(partial, names, known={k: v for e in exports for k, v in e.hashes.items()}),
                random_weights=options.random_weights,
                layout=options.layout,
            )
            manifest.conversion_seconds = round(time.perf_counter() - started, 2)
            manifest.write(partial)
    progress.note(f"wrote {options.output} in {manifest.conversion_seconds:.1f} s")
    return ConvertResult(output=Path(options.output), manifest=manifest)


@dataclass
class _Exported:
    """One family's graphs, written: where, their hashes, the PyTorch probes to check them against, and what the
    export did (for the manifest)."""

    family: Family
    graph_files: dict[str, Path]
    hashes: dict[str, str]
    probes: list
    metadata: dict[str, str]
    info: dict[str, Any]

    def external_data(self, directory: Path) -> dict[str, str]:
        names = {role: self.family.external_data_file(path.name) for role, path in self.graph_files.items()}
        return {role: name for role, name in names.items() if (directory / name).exists()}


def _export_family(family: Family, loaded: _Loaded, prep, facts: ModelFacts, url: str, comment: str,
                   options: ConvertOptions, partial: Path, scratch: Path, progress: Progress) -> _Exported:
    """Export and write one family's graphs.

    Writing the encoder's weights is bound by the disk (4.3 GB take 8-10 s on an ordinary disk), so it runs beside
    CPU work: nearly all of them are written while the encoder is exported (weights_ahead), the rest while the
    other graphs are exported and the PyTorch probes computed, as is the checkpoint's sha256 (2 s for 4.3 GB,
    started with the first family). The modules' weights are only read on both sides."""
    from nemo2sherpa.convert.export.graphs import export_graphs, make_probes

    family.prepare_for_export(loaded.model)
    metadata = family.metadata(facts, url, comment)
    modules = family.export_modules(loaded.model)
    files = {role: partial / name for role, name in family.files("fp32").items()}
    encoder_role = family.encoder_role.name
    on_graph = lambda graph: progress.stage(f"export {graph}")  # noqa: E731
    encoder_module = modules.pop(encoder_role)
    ahead = _weights_ahead(encoder_module, files[encoder_role], options)
    try:
        encoder = export_graphs(family, {encoder_role: encoder_module}, scratch / "export", on_graph,
                                on_linear=ahead.queue if ahead else None)[encoder_role]
        optimizations: dict[str, Any] = {"optimizations": []}
        if options.optimize:
            with progress.stage(f"optimize {encoder_role} graph"):
                encoder, optimizations = optimize_encoder(encoder)
    except BaseException:
        if ahead is not None:
            ahead.writer.cancel()
        raise
    captured = [bool(encoder.tensors)]
    with ThreadPoolExecutor(max_workers=2) as background:
        writing = background.submit(write_graph, encoder, files[encoder_role], metadata=metadata,
                                    external_threshold=options.external_threshold,
                                    ahead=ahead.writer if ahead else None)
        del encoder
        if loaded.hash_path is not None and loaded.hashing is None:
            loaded.hashing = background.submit(sha256_file, loaded.hash_path)
        others = export_graphs(family, modules, scratch / "export", on_graph)
        captured += [bool(graph.tensors) for graph in others.values()]
        with progress.stage("probe PyTorch outputs"):
            probes = make_probes(family, loaded.model, prep.probe_frames)
        with progress.stage("write model directory"):
            written = {encoder_role: writing.result()}
            for role in list(others):
                written[role] = write_graph(others.pop(role), files[role],
                                            external_threshold=options.external_threshold)
            if loaded.hashing is not None:
                loaded.hashing.result()  # finished inside the pool's lifetime
    hashes = {name: digest for result in written.values() for name, digest in result.sha256.items()}
    for result in written.values():
        _place_external_data(family, result.files[0], hashes)
    info = {**optimizations,
            "weights_written_from": "captured from the exporter" if all(captured) else "the exporter's files",
            f"{encoder_role}_weights_bytes_written_during_export": written[encoder_role].written_ahead}
    return _Exported(family=family, graph_files={role: result.files[0] for role, result in written.items()},
                     hashes=hashes, probes=probes, metadata=metadata, info=info)


def _place_external_data(family: Family, graph: Path, hashes: dict[str, str]) -> None:
    """Give a written graph's external weights the family's file name (onnx-asr: '<graph>.onnx.data'); the hashes
    computed while writing follow the renamed file, the rewritten graph's is computed again with the manifest."""
    from nemo2sherpa.graphs.writing import place_external_data

    previous = place_external_data(graph, family.external_data_file(graph.name))
    if previous is not None:
        hashes.pop(graph.name, None)
        if previous in hashes:
            hashes[family.external_data_file(graph.name)] = hashes.pop(previous)


def _write_companions(families: list[Family], facts: ModelFacts, pieces: list[str], partial: Path) -> None:
    """The text files each family's runtime reads beside its graphs (tokens.txt; vocab.txt and config.json), written
    once: two families of one directory that name the same file must agree on its content."""
    texts: dict[str, str] = {}
    for family in families:
        for name, text in family.companion_files(facts, pieces).items():
            if texts.setdefault(name, text) != text:
                raise UserError(f"{name}: the {family.title} needs other contents than the family before it; "
                                "convert each decoder into a directory of its own")
    for name, text in texts.items():
        (partial / name).write_text(text, encoding="utf-8")


def _clean_up_and_hash(loaded: _Loaded, scratch: Path) -> None:
    _remove_tree(scratch)
    if loaded.hashing is not None:
        loaded.checkpoint["sha256"] = loaded.hashing.result()


@dataclass
class _Ahead:
    writer: WeightsAhead
    skipped: tuple[str, ...]
    prefix: str  # "" when the exported module is the encoder; "encoder." when it is a whole (CTC) model

    def queue(self, path: str, module: Any) -> None:
        if path.startswith(self.prefix) and path.rpartition(".")[2] not in self.skipped:
            self.writer.add_tensor(module.weight_t)


def _weights_ahead(module: Any, target: Path, options: ConvertOptions) -> _Ahead | None:
    """When the encoder's weights will go to an external file, start writing them now, during the export
    (weights_ahead): its pointwise convolutions at once, its linear weights as each is pre-transposed. On the 1.1B
    model that is 98% of the 4.3 GB, written while the encoder is exported. Depthwise convolutions are left to
    the end: the exporter folds the BatchNorm after them into new weights. `module` is what is exported for the
    encoder-holding graph: the encoder itself, or a CTC model whose encoder is its .encoder; only the encoder's
    weights are written ahead (a hybrid's transducer weights are not in a CTC graph)."""
    import torch

    encoder = getattr(module, "encoder", module)
    size = sum(tensor.nbytes for tensor in encoder.state_dict().values())
    if size < options.external_threshold:
        return None
    ahead = _Ahead(writer=WeightsAhead(target.with_suffix(".weights")),
                   skipped=REPLACED_WEIGHTS if options.optimize else (),
                   prefix="" if encoder is module else "encoder.")
    for inner in encoder.modules():
        if isinstance(inner, torch.nn.Conv1d) and inner.groups == 1 and inner.kernel_size == (1,):
            ahead.writer.add_tensor(inner.weight)
    return ahead


def _resolve(options: ConvertOptions) -> ResolvedSource:
    if options.random_weights:
        from nemo2sherpa.recipes import find_recipe, recipe_for_repo

        recipe = find_recipe(options.source) or recipe_for_repo(options.source)
        if recipe is None:
            raise UserError(f"{options.source}: --random-weights builds a recipe's architecture; "
                            "give a recipe name (`nemo2sherpa recipes`)")
        provenance = {"kind": "random", "recipe": recipe.name, "repo_id": recipe.repo_id, "seed": options.seed}
        return ResolvedSource(path=Path(recipe.name), provenance=provenance, recipe=recipe)
    return resolve_source(options.source, options.revision)


def _check_recipe(recipe: Recipe | None, facts: ModelFacts, path: Path) -> None:
    if recipe is None:
        return
    differences = recipe.checked_architecture().differences(facts.architecture)
    if differences:
        raise UserError.about(path, f"does not match recipe {recipe.name}: {'; '.join(differences)}")


def _checkpoint(resolved: ResolvedSource, scratch: Path, progress: Progress,
                check: Callable[[ModelFacts], None] = lambda facts: None) -> _Loaded:
    """Read the config (`check` sees its facts before the weights are loaded), then the model."""
    from nemo2sherpa.checkpoint.loading import load_from_archive, localise_tokenizer, tokenizer_pieces

    path = resolved.path
    with progress.stage("read checkpoint config"), NemoArchive(path) as archive:
        config = parse_config(archive.read_text(CONFIG_NAME), path)
        facts = facts_from_config(config, path)
        _check_recipe(resolved.recipe, facts, path)
        check(facts)
        local_config = localise_tokenizer(archive, config, scratch)
        pieces = tokenizer_pieces(local_config, path)
        if len(pieces) != facts.vocab_size:
            raise UserError.about(path, f"its tokenizer has {len(pieces)} tokens but the model expects "
                                        f"{facts.vocab_size}")
    with progress.stage("load weights"), NemoArchive(path) as archive:
        model = load_from_archive(archive, local_config, scratch)
    # its sha256 is computed later, beside the decoder and joiner exports (see _export_and_write)
    checkpoint = {**resolved.provenance, "sha256": None, "size": path.stat().st_size}
    facts = dataclasses.replace(facts, parameters=_parameter_count(model))
    return _Loaded(model=model, facts=facts, pieces=pieces, checkpoint=checkpoint, hash_path=path)


def _random(resolved: ResolvedSource, scratch: Path, seed: int, progress: Progress) -> _Loaded:
    from nemo2sherpa.checkpoint.loading import random_model

    recipe = resolved.recipe
    assert recipe is not None
    with progress.stage(f"build {recipe.name} with random weights"):
        model = random_model(recipe.architecture, scratch, seed=seed)
        config = nemo_model_config(recipe.architecture, str(scratch / "tokenizer"))
        facts = facts_from_config(config, Path(recipe.name))
        pieces = [model.tokenizer.ids_to_tokens([i])[0] for i in range(model.tokenizer.vocab_size)]
    facts = dataclasses.replace(facts, parameters=_parameter_count(model))
    checkpoint = {**resolved.provenance, "sha256": None, "size": None}
    return _Loaded(model=model, facts=facts, pieces=pieces, checkpoint=checkpoint)


def _parameter_count(model: Any) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def _comment(random_weights: bool) -> str:
    parts = [f"Converted by nemo2sherpa {__version__}"]
    if random_weights:
        parts.append("RANDOM WEIGHTS: architecture only, it does not transcribe")
    return "; ".join(parts)


def _versions() -> dict[str, str]:
    from importlib import metadata

    versions = {"nemo2sherpa": __version__, "python": platform.python_version()}
    for name, dist in (("nemo", "nemo_toolkit"), ("torch", "torch"), ("onnx", "onnx"), ("onnxruntime", "onnxruntime"),
                       ("onnxruntime-gpu", "onnxruntime-gpu")):
        try:
            versions[name] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)

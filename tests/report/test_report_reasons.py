"""Failure reasons group rows failing for the same reason: real paths and URIs become ``<file>``, and
nothing else in the message changes (quotes, punctuation, words such as ``file://`` or ``s3:// URI``)."""
from __future__ import annotations

import pandas as pd
import pytest

from stylecore.report import failure_reason, summarize

# Messages as the engine (OptionsError), weights.parse_spec and the storage layer word them.
NEEDS_DECODER = ("method adain needs a decoder: pass --decoder SPEC (decoder= in Python): "
                 "a decoder.pth path (pytorch-AdaIN's, or one from `stylize train adain`), file:// or s3:// URI; "
                 "random:SEED is untrained (noise, for tests)")
NO_CREDENTIALS = ("encoder: s3://bucket/vgg/enc.pth: no AWS credentials found "
                  "(environment, AWS_PROFILE, config files or instance role)")
BAD_SCHEME = "decoder: unsupported URI scheme 'http' in 'http://host/w/d.pth'; use a local path, file:// or s3://"


@pytest.mark.parametrize("message, reason", [
    (NEEDS_DECODER, NEEDS_DECODER),  # no path in it: unchanged ("file://," was eaten)
    (NO_CREDENTIALS, "encoder: <file>: no AWS credentials found "
                     "(environment, AWS_PROFILE, config files or instance role)"),
    (BAD_SCHEME, "decoder: unsupported URI scheme 'http' in '<file>'; use a local path, file:// or s3://"),
    ("decoder: malformed S3 URI 's3://bucket'; expected s3://bucket/key",  # no key, and the example form
     "decoder: malformed S3 URI 's3://bucket'; expected s3://bucket/key"),
    ("decoder file:///w/d.pth: file not found", "decoder <file>: file not found"),
    ("weights '/data/w/x.pth' missing (see s3://b/logs/x.txt).", "weights '<file>' missing (see <file>)."),
    ("ratio 1/2 and/or image/jpeg; in/c.png", "ratio 1/2 and/or image/jpeg; <file>"),
    ("decoder <b>exploded</b> at /x.png and ./a/b", "decoder <b>exploded</b> at <file> and <file>"),
    ("s3://bucket/a/b.jpg: not found", "not found"),
    ("cannot read /data/x.png (EOF)", "cannot read <file> (EOF)"),
])
def test_only_real_paths_are_replaced(message, reason):
    assert failure_reason(message) == reason


def test_same_reason_with_different_files_groups():
    m = pd.DataFrame({"id": ["a", "b", "c", "d"], "status": ["failed"] * 4, "error": [
        NO_CREDENTIALS, NO_CREDENTIALS.replace("vgg/enc.pth", "other/e2.pth"),
        BAD_SCHEME, BAD_SCHEME.replace("host/w/d.pth", "example.org/x.pth")]})
    s = summarize(m)
    assert s["failure_reasons"] == {
        "decoder: unsupported URI scheme 'http' in '<file>'; use a local path, file:// or s3://": 2,
        "encoder: <file>: no AWS credentials found (environment, AWS_PROFILE, config files or instance role)": 2}


def test_row_values_are_replaced_as_whole_words_once():
    row = {"id": "r1", "content": "/in/abc.png", "style": "abc"}
    assert failure_reason("abc not found: /in/abc.png", row) == "<file> not found: <file>"  # not "<<file>>"


def test_row_ids_are_not_files():
    """An id is free text: ids such as ``not`` or ``image`` replaced words of the message, so two rows failing
    for the same reason made two groups ("<file> found" and "not found")."""
    m = pd.DataFrame({"id": ["not", "row7", "image", "bomb"], "status": ["failed"] * 4,
                      "content": ["in/missing.jpg", "in/missing2.jpg", "in/notimg.jpg", "in/bomb.png"],
                      "error": ["in/missing.jpg: not found", "in/missing2.jpg: not found",
                                "in/notimg.jpg: not an image (unrecognised format)",
                                "in/bomb.png: could be decompression bomb DOS attack"]})
    assert summarize(m)["failure_reasons"] == {"not found": 2, "not an image (unrecognised format)": 1,
                                               "could be decompression bomb DOS attack": 1}


def test_parse_spec_message_keeps_its_quotes():
    from stylecore.errors import WeightsError
    from stylecore.weights import parse_spec

    with pytest.raises(WeightsError) as e:
        parse_spec("http://host/w/d.pth", what="decoder")
    reason = failure_reason(str(e.value))
    assert "'<file>'" in reason and reason.count("'") % 2 == 0 and "file:// or s3://" in reason


def test_credentials_never_reach_a_reason():
    reason = failure_reason("copy from s3://AKIAEXAMPLE:wJalrSECRET@bucket (no key) failed")
    assert "AKIAEXAMPLE" not in reason and "wJalrSECRET" not in reason


def test_whole_word_replacement_matches_the_regex_it_replaced():
    """``failure_reason`` replaces the row's files by plain string search (a regex compiled per row cost 90% of
    a 50,000-failure report); on random texts built from the row's own parts it agrees with that regex."""
    import random
    import re

    from stylecore.report import _replace_whole

    def by_regex(text, parts):
        alternatives = "|".join(re.escape(p) for p in sorted(parts, key=len, reverse=True))
        return re.sub(rf"(?<![\w/.<-])(?:{alternatives})(?![\w/>-]|\.\w)", "<file>", text)

    rng, alphabet = random.Random(0), "ab./<>-_ :x"
    for _ in range(5000):
        parts = {"".join(rng.choice(alphabet) for _ in range(rng.randint(3, 5))) for _ in range(rng.randint(1, 3))}
        pick = sorted(parts)
        text = "".join(rng.choice(pick) if rng.random() < .3 else rng.choice(alphabet) for _ in range(rng.randint(0, 15)))
        assert _replace_whole(text, parts, "<file>") == by_regex(text, parts), (text, parts)


def test_one_cause_across_shards_is_one_reason_and_weight_specs_stay_named():
    crash = "shard {:05d} did not finish: Crashed: Flow run {} exited with status -9"
    ids = ["1b2c3d4e-aaaa-bbbb-cccc-0123456789ab", "9f8e7d6c-1111-2222-3333-abcdefabcdef"]
    missing = "model: s3://run1/w/missing.pth: not found"
    m = pd.DataFrame({"id": list("abcdef"), "status": ["failed"] * 6, "model": ["s3://run1/w/missing.pth"] * 6,
                      "content": [f"/in/{c}.png" for c in "abcdef"],
                      "error": [crash.format(3, ids[0]), crash.format(3, ids[0]), crash.format(12, ids[1]),
                                missing, missing, "/in/f.png: not found"]})
    assert summarize(m)["failure_reasons"] == {
        "shard <n> did not finish: Crashed: Flow run <id> exited with status -9": 3,
        "model: s3://run1/w/missing.pth: not found": 2,  # the one spec every row shares: named, not "<file>"
        "not found": 1}

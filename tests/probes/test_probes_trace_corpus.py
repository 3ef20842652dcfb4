import json

import duckdb
import torch
from safetensors.torch import save_file

from probes.trace_corpus import main


def test_trace_corpus_two_ranks(bank_model, tmp_path, monkeypatch):
    ckpt = tmp_path / "ckpt"
    bank_model.save_pretrained(ckpt)
    ids = torch.randint(1, 50, (5, 12))
    mask = torch.ones(5, 12)
    mask[2, :3] = 0
    save_file({"input_ids": ids, "attention_mask": mask}, str(tmp_path / "data.safetensors"))
    out = tmp_path / "out"
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        assert main(["--checkpoint", str(ckpt), "--data", str(tmp_path / "data.safetensors"), "--out", str(out),
                     "--no-progress"]) == 0
    got = duckdb.sql(f"select shard, example, count(*) as n from read_parquet('{out}/token_loss/*/*.parquet', "
                     f"hive_partitioning=true) group by shard, example order by example").fetchall()
    assert [(int(r), e) for r, e, _ in got] == [(0, 0), (1, 1), (0, 2), (1, 3), (0, 4)]
    assert [n for *_, n in got] == [12, 12, 9, 12, 12]
    n = duckdb.sql(f"select count(*) from read_parquet('{out}/routing/*/*.parquet', hive_partitioning=true)"
                   ).fetchall()[0][0]
    assert n == (5 * 12 - 3) * 2 * 4
    meta = json.loads((out / "_meta" / "shard=1.json").read_text())
    assert meta["examples"] == [1, 3] and meta["world_size"] == 2
    assert (out / "importance" / "shard=0").exists() and not (out / "importance" / "shard=1").exists()


def test_trace_corpus_text_with_tokenizer(plain_model, tmp_path, monkeypatch):
    from pulse.data import WordTokenizer

    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ckpt = tmp_path / "ckpt"
    plain_model.save_pretrained(ckpt)
    words = "the cat sat on a mat and dog ran".split()
    tok = WordTokenizer.from_vocabulary(words)
    assert tok.vocab_size <= 50
    tok.save(ckpt)
    (tmp_path / "data.txt").write_text("the cat sat on the mat\n\nthe dog ran\na cat ran\n")
    out = tmp_path / "out"
    assert main(["--checkpoint", str(ckpt), "--data", str(tmp_path / "data.txt"), "--out", str(out),
                 "--limit", "2", "--names", "blocks.0.*", "--no-progress"]) == 0
    rows = duckdb.sql(f"select example, count(*) from read_parquet('{out}/token_loss/*/*.parquet') "
                      f"group by example order by example").fetchall()
    assert rows == [(0, 6), (1, 3)]
    assert not (out / "routing").exists() and (out / "fusion_gate").exists()

"""Indexing and retrieval of the RAG app (``confidence_router_rag``), on real files and
real loaders.

No model answers anything here; the token budget uses the real SmolLM2 tokenizer.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from langchain_core.documents import Document

from confidence_router import ConfigurationError, LlamaCppSLM
from confidence_router.backends.spec import parse_model_spec
from confidence_router_rag import chain, documents, models, retrieval

pytestmark = pytest.mark.filterwarnings("ignore:.*langchain-community.*:DeprecationWarning")


def test_example_docs_are_found_sorted_without_the_attribution(example_docs: Path) -> None:
    names = [p.name for p in documents.find_documents(example_docs)]
    assert names == sorted(names)
    assert "ATTRIBUTION.md" not in names
    assert {"normans.md", "black_death.txt"} <= set(names)


def test_hidden_unsupported_and_licence_files_are_skipped(tmp_path: Path) -> None:
    (tmp_path / "notes.md").write_text("kept")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "deep.txt").write_text("kept too")
    (tmp_path / ".hidden.md").write_text("skipped")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD.txt").write_text("skipped")
    (tmp_path / "table.csv").write_text("a,b")
    (tmp_path / "LICENSE.txt").write_text("skipped")
    found = [p.relative_to(tmp_path).as_posix() for p in documents.find_documents(tmp_path)]
    assert found == ["notes.md", "sub/deep.txt"]


def test_missing_folder_and_file_instead_of_folder_are_named(tmp_path: Path) -> None:
    with pytest.raises(documents.DocumentsFolderError, match="does not exist") as missing:
        documents.find_documents(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(missing.value)
    (tmp_path / "file.md").write_text("x")
    with pytest.raises(documents.DocumentsFolderError, match="is not a folder"):
        documents.find_documents(tmp_path / "file.md")


def test_folder_without_supported_files_says_which_types_are(tmp_path: Path) -> None:
    (tmp_path / "data.csv").write_text("a,b")
    with pytest.raises(documents.NoDocumentsError, match=r"\.md.*\.txt.*\.pdf"):
        documents.find_documents(tmp_path)


def test_loaded_documents_carry_a_relative_source(example_docs: Path) -> None:
    paths = documents.find_documents(example_docs)
    docs = documents.load_documents(paths, example_docs)
    assert {d.metadata["source"] for d in docs} == {p.name for p in paths}
    normans = next(d for d in docs if d.metadata["source"] == "normans.md")
    assert normans.page_content.startswith("# Normans")


def test_pdf_text_is_loaded_with_its_page(tmp_path: Path, make_pdf: Callable[[str], bytes]) -> None:
    pdf = tmp_path / "vault.pdf"
    pdf.write_bytes(make_pdf("The vault code is 4721."))
    (doc,) = documents.load_document(pdf, tmp_path)
    assert doc.page_content == "The vault code is 4721."
    assert doc.metadata["source"] == "vault.pdf"
    assert doc.metadata["page"] == 0


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("latin1.txt", "caf\xe9 cr\xe8me".encode("latin-1"), "not UTF-8"),
        ("broken.pdf", b"%PDF-1.4\nthis is not really a pdf", "broken.pdf"),
    ],
)
def test_unreadable_file_raises_with_path_and_reason(
    tmp_path: Path, name: str, content: bytes, reason: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(documents.DocumentLoadError) as info:
        documents.load_documents(documents.find_documents(tmp_path), tmp_path)
    assert info.value.path == path
    assert str(path) in str(info.value)
    assert reason in str(info.value)


def test_splitting_keeps_sources_and_start_offsets(example_docs: Path) -> None:
    docs = documents.load_documents(documents.find_documents(example_docs), example_docs)
    chunks = documents.split_documents(docs, chunk_size=800, chunk_overlap=80)
    assert len(chunks) > len(docs)
    assert all(len(c.page_content) <= 800 for c in chunks)
    by_source = {d.metadata["source"]: d.page_content for d in docs}
    for chunk in chunks[:20]:
        start = chunk.metadata["start_index"]
        original = by_source[chunk.metadata["source"]]
        assert original[start : start + len(chunk.page_content)] == chunk.page_content


@pytest.mark.parametrize(
    ("size", "overlap", "field"), [(10, 0, "chunk_size"), (100, 100, "chunk_overlap")]
)
def test_bad_chunking_is_rejected_by_name(size: int, overlap: int, field: str) -> None:
    with pytest.raises(ConfigurationError, match=field):
        documents.split_documents([Document("text")], chunk_size=size, chunk_overlap=overlap)


def test_bm25_tokens_ignore_case_punctuation_and_stop_words() -> None:
    assert retrieval.bm25_tokens("Who ruled the Normans?") == ["ruled", "normans"]


def test_bm25_finds_the_passage_that_answers(example_docs: Path) -> None:
    docs = documents.load_documents(documents.find_documents(example_docs), example_docs)
    retriever = retrieval.build_retriever(documents.split_documents(docs), k=3)
    hits = retriever.invoke("What is the Latin name for Black Death?")
    assert len(hits) == 3
    assert hits[0].metadata["source"] == "black_death.txt"
    assert "atra mors" in " ".join(h.page_content for h in hits)


def test_unknown_retriever_and_bad_k_are_rejected() -> None:
    chunks = [Document("text")]
    with pytest.raises(ConfigurationError, match="retriever"):
        retrieval.build_retriever(chunks, "faiss")
    with pytest.raises(ConfigurationError, match="k"):
        retrieval.build_retriever(chunks, k=0)


def test_unreachable_ollama_embeddings_raise_a_clear_error(dead_host: str) -> None:
    with pytest.raises(retrieval.EmbeddingsUnavailableError, match="ollama pull nomic-embed-text"):
        retrieval.build_retriever([Document("text")], "ollama-embeddings", ollama_host=dead_host)


def test_slm_must_give_logprobs() -> None:
    with pytest.raises(ConfigurationError, match="log-probabilities"):
        models.make_slm(parse_model_spec("anthropic:claude-haiku", "--slm"), max_tokens=8)


def test_token_budget_drops_the_least_relevant_passages_first(smollm2_slm: LlamaCppSLM) -> None:
    budget = chain.token_budget(smollm2_slm, max_tokens=48)
    assert budget is not None
    assert budget.limit == smollm2_slm.context_window - 48
    passage = "The Normans were descended from Norse raiders. " * 40  # ~400 tokens each
    docs = [Document(passage, metadata={"source": f"d{i}.md"}) for i in range(8)]
    kept = budget.fit("Who were the Normans?", docs)
    assert 0 < len(kept) < len(docs)
    assert kept == docs[: len(kept)]
    assert budget.prompt_tokens("Who were the Normans?", kept) <= budget.limit
    assert budget.prompt_tokens("Who were the Normans?", docs[: len(kept) + 1]) > budget.limit


def test_token_budget_rejects_a_question_longer_than_the_window(smollm2_slm: LlamaCppSLM) -> None:
    budget = chain.token_budget(smollm2_slm, max_tokens=48)
    assert budget is not None
    with pytest.raises(chain.QuestionTooLongError, match="context window"):
        budget.check_question("why " * 3000)


def test_base_models_get_one_worked_example(
    smollm2_slm: LlamaCppSLM, gemma3_slm: LlamaCppSLM
) -> None:
    assert not chain.needs_demo(smollm2_slm)  # chat template
    assert chain.needs_demo(gemma3_slm)  # completion prompt
    plain = chain.rag_prompt().format_messages(context="C", question="Q?")
    led = chain.rag_prompt(demo=True).format_messages(context="C", question="Q?")
    assert chain.BASE_MODEL_DEMO not in plain[1].content
    assert led[1].content.startswith(chain.BASE_MODEL_DEMO)
    assert led[1].content.endswith("Context: C\nQuestion: Q?\nAnswer:")
    with_demo = chain.token_budget(gemma3_slm, max_tokens=16)
    assert with_demo is not None and with_demo.demo
    without = chain.TokenBudget(with_demo.count_prompt, with_demo.limit, demo=False)
    assert with_demo.prompt_tokens("Q?", []) > without.prompt_tokens("Q?", [])


def test_completion_prompt_adds_the_example_once() -> None:
    assert callable(models.completion_chat_handler())  # llama.cpp's wrapper of this formatter
    formatter = models._completion_prompt
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Context: C\nQuestion: Q?\nAnswer:"},
    ]
    prompt = formatter(messages=messages).prompt
    assert prompt == f"Be brief.\n\n{chain.BASE_MODEL_DEMO}\n\nContext: C\nQuestion: Q?\nAnswer:"
    led = [messages[0], {"role": "user", "content": f"{chain.BASE_MODEL_DEMO}\n\nContext: C"}]
    assert formatter(messages=led).prompt.count(chain.BASE_MODEL_DEMO) == 1

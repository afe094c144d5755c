import { describe, expect, it } from "vitest";
import * as fs from "node:fs";
import * as path from "node:path";
import { GmError, loadGeneMap, loadMedians, loadVocabulary, Vocabulary } from "@gm/data";
import { hasShared, shared, tmpDir } from "../../../tests/helpers/paths.js";

describe("vocabulary inputs", () => {
  const dir = tmpDir("gm-vocab-");
  const write = (name: string, text: string) => {
    const p = path.join(dir, name);
    fs.writeFileSync(p, text);
    return p;
  };

  it.skipIf(!hasShared)("reads the reference JSON form (25,426 tokens, genes from id 2)", () => {
    const v = loadVocabulary(shared("genes/vocab_25426.json"));
    expect(v.size).toBe(25426);
    expect(v.get("[PAD]")).toBe(1);
    expect(v.get("ENSG00000000003")).toBe(2);
    expect(v.genes().length).toBe(25424);
  });

  it("reads a Hugging Face tokenizer.json (WordLevel)", () => {
    const p = write(
      "tokenizer.json",
      JSON.stringify({ version: "1.0", model: { type: "WordLevel", unk_token: "[UNK]", vocab: { "[UNK]": 0, "[PAD]": 1, ENSG00000000005: 3, ENSG00000000003: 2 } } }),
    );
    const v = loadVocabulary(p);
    expect(v.get("ENSG00000000003")).toBe(2);
    expect(v.get("ENSG00000000005")).toBe(3);
    expect(v.specials).toEqual({ "[UNK]": 0, "[PAD]": 1 });
    expect(v.genes()).toEqual(["ENSG00000000003", "ENSG00000000005"]);
    expect(() => loadVocabulary(write("bpe.json", JSON.stringify({ model: { type: "BPE", vocab: {} } })))).toThrow(/WordLevel/);
  });

  it("reads a flat {token: id} object and a plain text gene list", () => {
    expect(loadVocabulary(write("flat.json", JSON.stringify({ "[PAD]": 0, ENSG1: 1 }))).get("ENSG1")).toBe(1);
    const v = loadVocabulary(write("genes.txt", "# genes\nENSG00000000003\n\nENSG00000000005\n"));
    expect(v.get("[UNK]")).toBe(0);
    expect(v.get("ENSG00000000003")).toBe(2);
    expect(v.get("ENSG00000000005")).toBe(3);
  });

  it("round-trips through the gm JSON form, with appended specials", () => {
    const v = Vocabulary.fromGenes(["ENSG2", "ENSG1", "ENSG1"]).withSpecials(["[CLS]"]);
    expect(v.get("ENSG1")).toBe(2);
    expect(v.get("[CLS]")).toBe(4);
    const p = path.join(dir, "out.json");
    v.save(p);
    const back = loadVocabulary(p);
    expect(back.get("[CLS]")).toBe(4);
    expect(back.genes()).toEqual(["ENSG1", "ENSG2"]);
    expect(JSON.parse(fs.readFileSync(p, "utf8"))).toEqual({ specials: { "[UNK]": 0, "[PAD]": 1 }, first_gene_id: 2, genes: ["ENSG1", "ENSG2"], extra_specials: { "[CLS]": 4 } });
  });

  it("refuses malformed vocabularies, medians and gene maps with the file named", () => {
    expect(() => loadVocabulary(write("bad.json", "{"))).toThrow(GmError);
    expect(() => loadVocabulary(write("neg.json", JSON.stringify({ a: -1 })))).toThrow(/bad\.json|neg\.json: token 'a' has id -1/);
    expect(() => loadVocabulary(write("empty.txt", "\n"))).toThrow(/empty\.txt: vocabulary file is empty/);
    expect(() => loadMedians(write("m.json", JSON.stringify({ ENSG1: 0 })))).toThrow(/m\.json: median of ENSG1 is 0/);
    expect(() => loadMedians(path.join(dir, "missing.json"))).toThrow(/missing\.json: medians file not found/);
    expect(() => loadGeneMap(write("g.json", JSON.stringify({ symbol_to_ensembl: {} })))).toThrow(/g\.json: gene map holds no/);
    expect(loadGeneMap(write("g2.json", JSON.stringify({ CD3D: "ENSG00000167286" }))).get("CD3D")).toBe("ENSG00000167286");
  });
});

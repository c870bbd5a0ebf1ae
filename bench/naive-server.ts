// The server a user would write in 30 lines instead of running dqserve: fastify + sharp + one onnxruntime-node
// session of a static model, each request run alone at batch 1. It feeds the model what its input asks for:
// uint8 NHWC pixels (a dqserve format-2 static graph) or normalised float32 NCHW (bench/baselines.py's models).
// Usage: tsx bench/naive-server.ts <model.onnx> [port] [intra-op threads]; prints "listening <url>".
import Fastify from 'fastify';
import ort from 'onnxruntime-node';
import sharp from 'sharp';

const [model, port = '0', threads = '1'] = process.argv.slice(2);
if (!model) throw new Error('usage: naive-server.ts <model.onnx> [port] [intra-op threads]');
const MEAN = [0.4914, 0.4822, 0.4465];
const STD = [0.247, 0.2435, 0.2616];

const session = await ort.InferenceSession.create(model, { intraOpNumThreads: Number(threads) });
const input = session.inputMetadata[0];
const uint8 = input?.isTensor === true && input.type === 'uint8';
const app = Fastify();
app.addContentTypeParser('image/jpeg', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));
app.post('/v1/classify', async (req) => {
  const rgb = await sharp(req.body as Buffer).resize(32, 32).removeAlpha().raw().toBuffer();
  let image: ort.Tensor;
  if (uint8) image = new ort.Tensor('uint8', new Uint8Array(rgb), [1, 32, 32, 3]);
  else {
    const x = new Float32Array(3 * 1024);
    for (let p = 0; p < 1024; p++) for (let c = 0; c < 3; c++) x[c * 1024 + p] = ((rgb[p * 3 + c] as number) / 255 - (MEAN[c] as number)) / (STD[c] as number);
    image = new ort.Tensor('float32', x, [1, 3, 32, 32]);
  }
  const logits = (await session.run({ [session.inputNames[0] as string]: image }))[session.outputNames[0] as string]?.data as Float32Array;
  return { class: logits.indexOf(Math.max(...logits)) };
});
console.log(`listening ${await app.listen({ host: '127.0.0.1', port: Number(port) })}`);

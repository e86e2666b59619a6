import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.File;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.util.HexFormat;
import org.apache.avro.Schema;
import org.apache.avro.SchemaNormalization;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericDatumReader;
import org.apache.avro.generic.GenericDatumWriter;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.io.DecoderFactory;
import org.apache.avro.io.EncoderFactory;
import org.apache.avro.io.JsonEncoder;
import org.apache.avro.message.BinaryMessageDecoder;
import org.apache.avro.message.BinaryMessageEncoder;

/** encode SCHEMA JSONFILE: Avro-JSON record -> single-object bytes (hex) on stdout.
 *  decode SCHEMA HEX: single-object bytes -> Avro-JSON record on stdout.
 *  fingerprint SCHEMA: parsingFingerprint64 as unsigned hex. */
public class AvroInterop {
  public static void main(String[] args) throws Exception {
    Schema schema = new Schema.Parser().parse(new File(args[1]));
    switch (args[0]) {
      case "encode": {
        String json = Files.readString(new File(args[2]).toPath());
        GenericDatumReader<GenericRecord> r = new GenericDatumReader<>(schema);
        GenericRecord rec = r.read(null, DecoderFactory.get().jsonDecoder(schema, json));
        ByteBuffer buf = new BinaryMessageEncoder<GenericRecord>(GenericData.get(), schema).encode(rec);
        byte[] out = new byte[buf.remaining()];
        buf.get(out);
        System.out.println(HexFormat.of().formatHex(out));
        break;
      }
      case "decode": {
        byte[] in = HexFormat.of().parseHex(args[2]);
        GenericRecord rec = new BinaryMessageDecoder<GenericRecord>(GenericData.get(), schema)
            .decode(new ByteArrayInputStream(in));
        ByteArrayOutputStream bos = new ByteArrayOutputStream();
        JsonEncoder enc = EncoderFactory.get().jsonEncoder(schema, bos);
        new GenericDatumWriter<GenericRecord>(schema).write(rec, enc);
        enc.flush();
        System.out.println(bos.toString("UTF-8"));
        break;
      }
      case "fingerprint":
        System.out.println(Long.toUnsignedString(SchemaNormalization.parsingFingerprint64(schema), 16));
        break;
      default:
        throw new IllegalArgumentException(args[0]);
    }
  }
}
